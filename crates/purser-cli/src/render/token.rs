//! What `purser token` prints. A token's secret appears once, in `token create`'s answer.

use purser_client::pb;
use serde_json::{json, Value};

use super::{Obj, Render};
use crate::parse::format_time;

fn access_name(access: i32) -> &'static str {
    match pb::Access::try_from(access) {
        Ok(pb::Access::Viewer) => "viewer",
        Ok(pb::Access::Editor) => "editor",
        Ok(pb::Access::Admin) => "admin",
        _ => "unknown",
    }
}

fn time_or_null(ms: u64) -> Value {
    if ms == 0 {
        Value::Null
    } else {
        json!(format_time(ms))
    }
}

pub struct Created(pub pb::CreateTokenResponse);

impl Render for Created {
    fn json(&self) -> Value {
        let t = &self.0;
        Obj::new()
            .set("token", t.token.clone())
            .set("token_id", t.token_id)
            .set("scope", t.scope.clone())
            .set("access", access_name(t.access))
            .set("expires_at", time_or_null(t.expires_at_ms))
            .value()
    }

    fn text(&self) -> String {
        let t = &self.0;
        let expires = if t.expires_at_ms == 0 {
            "until revoked".to_owned()
        } else {
            format!("until {}", format_time(t.expires_at_ms))
        };
        format!(
            "created token {} ({} of {}, {expires}); it is shown only this once:\n{}",
            t.token_id,
            access_name(t.access),
            t.scope,
            t.token
        )
    }
}

pub struct Listed(pub Vec<pb::TokenView>);

impl Render for Listed {
    fn json(&self) -> Value {
        let tokens: Vec<Value> = self
            .0
            .iter()
            .map(|t| {
                Obj::new()
                    .set("token_id", t.id)
                    .set("name", t.name.clone())
                    .set("scope", t.scope.clone())
                    .set("access", access_name(t.access))
                    .set("created_at", time_or_null(t.created_at_ms))
                    .set("expires_at", time_or_null(t.expires_at_ms))
                    .set("created_by", (t.created_by != 0).then_some(t.created_by))
                    .set("revoked_at", time_or_null(t.revoked_at_ms))
                    .value()
            })
            .collect();
        json!({ "tokens": tokens })
    }

    fn text(&self) -> String {
        let when = |ms: u64| {
            if ms == 0 {
                "-".to_owned()
            } else {
                format_time(ms)
            }
        };
        let rows = self.0.iter().map(|t| {
            vec![
                t.id.to_string(),
                t.name.clone(),
                t.scope.clone(),
                access_name(t.access).to_owned(),
                when(t.expires_at_ms),
                when(t.revoked_at_ms),
            ]
        });
        super::table(
            &["id", "name", "scope", "access", "expires", "revoked"],
            rows,
        )
    }
}

pub struct Revoked {
    pub id: u64,
    pub log_index: u64,
}

impl Render for Revoked {
    fn json(&self) -> Value {
        json!({ "token_id": self.id, "revoked": true, "log_index": self.log_index })
    }

    fn text(&self) -> String {
        format!("revoked token {} (log index {})", self.id, self.log_index)
    }
}
