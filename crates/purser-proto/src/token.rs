//! Conversions of the Tokens service. A token's secret is drawn by the member that takes the
//! call, so `CreateTokenRequest` becomes a command there, with the secret's hash.

use purser_core::{Access, Outcome, Recorded, TokenView};

use crate::convert::{ConvertError, FromOutcome, MutatingRequest, UnexpectedOutcome};
use crate::pb;

impl From<Access> for pb::Access {
    fn from(access: Access) -> Self {
        match access {
            Access::Viewer => pb::Access::Viewer,
            Access::Editor => pb::Access::Editor,
            Access::Admin => pb::Access::Admin,
        }
    }
}

/// The access a request names; unspecified or unknown is refused.
pub fn access(value: i32) -> Result<Access, ConvertError> {
    match pb::Access::try_from(value) {
        Ok(pb::Access::Viewer) => Ok(Access::Viewer),
        Ok(pb::Access::Editor) => Ok(Access::Editor),
        Ok(pb::Access::Admin) => Ok(Access::Admin),
        _ => Err(ConvertError::new(
            "access",
            "is required: viewer, editor or admin",
        )),
    }
}

impl From<TokenView> for pb::TokenView {
    fn from(t: TokenView) -> Self {
        pb::TokenView {
            id: t.id,
            name: t.name,
            scope: t.scope,
            access: pb::Access::from(t.access) as i32,
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms.unwrap_or(0),
            created_by: t.created_by.unwrap_or(0),
            revoked_at_ms: t.revoked_at_ms.unwrap_or(0),
        }
    }
}

impl TryFrom<pb::RevokeTokenRequest> for purser_core::Op {
    type Error = ConvertError;
    fn try_from(r: pb::RevokeTokenRequest) -> Result<Self, ConvertError> {
        if r.token_id == 0 {
            return Err(ConvertError::new("token_id", "is required"));
        }
        Ok(purser_core::Op::RevokeToken { id: r.token_id })
    }
}

impl MutatingRequest for pb::RevokeTokenRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
    fn sent_at_ms(&self) -> u64 {
        self.sent_at_ms
    }
}

impl FromOutcome for pb::RevokeTokenResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        match outcome {
            Outcome::Done => Ok(pb::RevokeTokenResponse {
                log_index,
                duplicate: false,
                first_outcome: None,
            }),
            Outcome::Duplicate(rec @ Recorded::Done) => Ok(pb::RevokeTokenResponse {
                log_index,
                duplicate: true,
                first_outcome: Some(rec.into()),
            }),
            other => Err(UnexpectedOutcome {
                response: "RevokeTokenResponse",
                outcome: format!("{other:?}"),
            }),
        }
    }
}
