//! The Raft group's answers: membership changes, leadership, snapshots and `cluster status`.

use purser_client::pb;
use serde_json::Value;

use super::{names, table, Obj, Render};

fn members_json(members: &[pb::Member]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| {
                Obj::new()
                    .set("id", m.id)
                    .set("peer_addr", m.peer_addr.clone())
                    .set("client_addr", m.client_addr.clone())
                    .set("voter", m.voter)
                    .value()
            })
            .collect(),
    )
}

fn members_table(members: &[pb::Member]) -> String {
    let rows = members.iter().map(|m| {
        vec![
            m.id.to_string(),
            if m.voter { "voter" } else { "learner" }.into(),
            m.peer_addr.clone(),
            m.client_addr.clone(),
        ]
    });
    table(&["ID", "MEMBER", "PEER", "CLIENT"], rows)
}

/// The membership after a change.
pub struct Members<'a> {
    /// What was done, as the line above the table says it.
    pub done: String,
    /// The log index of the change (none for `init`, whose answer may precede it).
    pub log_index: Option<u64>,
    pub members: &'a [pb::Member],
}

impl Render for Members<'_> {
    fn json(&self) -> Value {
        let mut obj = Obj::new();
        if let Some(index) = self.log_index {
            obj = obj.set("log_index", index);
        }
        obj.set("members", members_json(self.members)).value()
    }

    fn text(&self) -> String {
        format!("{}\n{}", self.done, members_table(self.members))
    }
}

/// Where `cluster init` put the cluster's first token.
pub enum AdminToken {
    /// Printed (empty: the member runs without authentication).
    Shown(String),
    /// Written to this file (mode 0600).
    Written(std::path::PathBuf),
}

/// `cluster init`: the membership and the first token (scope `/`, admin), shown once.
pub struct Initialized<'a> {
    pub members: Members<'a>,
    pub token: AdminToken,
    pub token_id: u64,
}

impl Render for Initialized<'_> {
    fn json(&self) -> Value {
        let mut obj = Obj::new().set("members", members_json(self.members.members));
        match &self.token {
            AdminToken::Shown(token) if token.is_empty() => {}
            AdminToken::Shown(token) => {
                obj = obj.set("admin_token", token.clone());
            }
            AdminToken::Written(file) => {
                obj = obj.set("admin_token_file", file.display().to_string());
            }
        }
        if self.token_id != 0 {
            obj = obj.set("admin_token_id", self.token_id);
        }
        obj.value()
    }

    fn text(&self) -> String {
        let members = self.members.text();
        match &self.token {
            AdminToken::Shown(token) if token.is_empty() => members,
            AdminToken::Shown(token) => format!(
                "{members}\nadmin token {} (scope /, admin; shown only this once):\n{token}",
                self.token_id
            ),
            AdminToken::Written(file) => format!(
                "{members}\nadmin token {} (scope /, admin) written to {}",
                self.token_id,
                file.display()
            ),
        }
    }
}

/// Who leads after `transfer-leader`.
pub struct Leader {
    pub asked: u64,
    pub leader_id: Option<u64>,
    /// The member asked for led already: nothing was sent.
    pub already: bool,
}

impl Render for Leader {
    fn json(&self) -> Value {
        Obj::new().set("leader_id", self.leader_id).value()
    }

    fn text(&self) -> String {
        let id = self.asked;
        match self.leader_id {
            Some(_) if self.already => format!("member {id} is already the leader"),
            Some(leader) if leader == id => format!("member {id} is the leader"),
            Some(leader) => format!("the leader is member {leader} (asked for {id})"),
            None => format!("no leader known yet (asked for {id})"),
        }
    }
}

pub struct Snapshot {
    pub snapshot_index: u64,
    pub purged: bool,
}

impl Render for Snapshot {
    fn json(&self) -> Value {
        Obj::new()
            .set("snapshot_index", self.snapshot_index)
            .set("purged", self.purged)
            .value()
    }

    fn text(&self) -> String {
        let purged = if self.purged {
            ", log purged up to it"
        } else {
            ""
        };
        format!("snapshot at index {}{purged}", self.snapshot_index)
    }
}

/// One endpoint's answer to `cluster status`: its own view, or why it gave none.
pub type Answer = (String, Result<pb::StatusResponse, String>);

/// `cluster status`: every member's view, then the membership as the leader sees it.
pub struct Statuses<'a>(pub &'a [Answer]);

fn status_json((endpoint, answer): &Answer) -> Value {
    match answer {
        Ok(s) => Obj::new()
            .set("endpoint", endpoint.clone())
            .set("id", s.id)
            .set("role", names::role(s.role))
            .set("term", s.term)
            .set("leader_id", s.leader_id)
            .set("leader_client_addr", s.leader_client_addr.clone())
            .set("last_log_index", s.last_log_index)
            .set("applied_index", s.applied_index)
            .set("snapshot_index", s.snapshot_index)
            .set("state_digest", s.state_digest.clone())
            .set("state_now_ms", s.state_now_ms)
            .set("members", members_json(&s.members))
            .value(),
        Err(e) => Obj::new()
            .set("endpoint", endpoint.clone())
            .set("error", e.clone())
            .value(),
    }
}

fn status_row((endpoint, answer): &Answer) -> Vec<String> {
    let dash = || "-".to_owned();
    match answer {
        Ok(s) => vec![
            endpoint.clone(),
            s.id.to_string(),
            names::role(s.role).into(),
            s.term.to_string(),
            s.leader_id.map_or_else(dash, |l| l.to_string()),
            s.last_log_index.to_string(),
            s.applied_index.to_string(),
            s.snapshot_index.map_or_else(dash, |i| i.to_string()),
            s.state_digest.chars().take(12).collect(),
        ],
        Err(_) => vec![endpoint.clone(), dash(), "unreachable".into()],
    }
}

impl Render for Statuses<'_> {
    fn json(&self) -> Value {
        Value::Array(self.0.iter().map(status_json).collect())
    }

    fn text(&self) -> String {
        let header = [
            "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "LAST_LOG", "APPLIED", "SNAPSHOT", "DIGEST",
        ];
        let mut lines = vec![table(&header, self.0.iter().map(status_row))];
        for (endpoint, answer) in self.0 {
            if let Err(e) = answer {
                lines.push(format!("{endpoint}: {e}"));
            }
        }
        // The membership as the leader sees it, or as anyone does when there is no leader.
        let view = self
            .0
            .iter()
            .filter_map(|(_, a)| a.as_ref().ok())
            .max_by_key(|s| (s.role == pb::RaftRole::Leader as i32, s.term));
        if let Some(s) = view.filter(|s| !s.members.is_empty()) {
            lines.push(format!(
                "\nmembership (as member {} sees it):\n{}",
                s.id,
                members_table(&s.members)
            ));
        }
        lines.join("\n")
    }
}
