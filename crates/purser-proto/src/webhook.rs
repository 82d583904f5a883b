//! Conversions of the Webhook service: requests to replicated commands and outcomes to
//! responses, like [`crate::convert`] does for the Budget and Admin services.

use purser_core::{NodeRef, Op, Outcome, Recorded, WebhookView};

use crate::convert::{ConvertError, FromOutcome, MutatingRequest, UnexpectedOutcome};
use crate::pb;

fn unexpected(response: &'static str, outcome: &Outcome) -> UnexpectedOutcome {
    UnexpectedOutcome {
        response,
        outcome: format!("{outcome:?}"),
    }
}

/// A required root, named by id or path.
pub fn root_ref(root: Option<pb::NodeRef>) -> Result<NodeRef, ConvertError> {
    let root = root.ok_or_else(|| ConvertError::new("root", "is required"))?;
    NodeRef::try_from(root).map_err(|e| ConvertError::new("root", e.message))
}

impl TryFrom<pb::AddWebhookRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::AddWebhookRequest) -> Result<Self, ConvertError> {
        Ok(Op::AddWebhook {
            root: root_ref(r.root)?,
            url: r.url,
            secret: r.secret.into(),
            kinds: r.kinds,
        })
    }
}

impl TryFrom<pb::RemoveWebhookRequest> for Op {
    type Error = ConvertError;
    fn try_from(r: pb::RemoveWebhookRequest) -> Result<Self, ConvertError> {
        if r.webhook_id == 0 {
            return Err(ConvertError::new("webhook_id", "is required"));
        }
        Ok(Op::RemoveWebhook { id: r.webhook_id })
    }
}

impl MutatingRequest for pb::AddWebhookRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
    fn sent_at_ms(&self) -> u64 {
        self.sent_at_ms
    }
}

impl MutatingRequest for pb::RemoveWebhookRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
    fn sent_at_ms(&self) -> u64 {
        self.sent_at_ms
    }
}

impl FromOutcome for pb::AddWebhookResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        let (webhook_id, first) = match outcome {
            Outcome::WebhookAdded { webhook_id } => (webhook_id, None),
            Outcome::Duplicate(rec @ Recorded::WebhookAdded { webhook_id }) => {
                (webhook_id, Some(rec.into()))
            }
            other => return Err(unexpected("AddWebhookResponse", &other)),
        };
        Ok(pb::AddWebhookResponse {
            log_index,
            duplicate: first.is_some(),
            first_outcome: first,
            webhook_id,
        })
    }
}

impl FromOutcome for pb::RemoveWebhookResponse {
    fn from_outcome(outcome: Outcome, log_index: u64) -> Result<Self, UnexpectedOutcome> {
        match outcome {
            Outcome::Done => Ok(pb::RemoveWebhookResponse {
                log_index,
                duplicate: false,
                first_outcome: None,
            }),
            Outcome::Duplicate(rec @ Recorded::Done) => Ok(pb::RemoveWebhookResponse {
                log_index,
                duplicate: true,
                first_outcome: Some(rec.into()),
            }),
            other => Err(unexpected("RemoveWebhookResponse", &other)),
        }
    }
}

/// A subscription as the API lists it: never with its secret.
pub fn webhook_view(view: WebhookView, root_path: String) -> pb::WebhookView {
    pb::WebhookView {
        id: view.id,
        root_id: view.root,
        root_path,
        url: view.url,
        kinds: view.kinds,
        delivered_through: view.delivered_through,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_commands_and_outcomes_become_responses() {
        let request = pb::AddWebhookRequest {
            request_id: "r1".into(),
            sent_at_ms: 5,
            root: Some(pb::NodeRef {
                node: Some(pb::node_ref::Node::Path("acme".into())),
            }),
            url: "http://127.0.0.1:1/h".into(),
            secret: "0123456789abcdef".into(),
            kinds: vec!["usage".into()],
        };
        let command = request.into_command().expect("converts");
        assert!(
            matches!(command.op, Op::AddWebhook { ref root, .. } if *root == NodeRef::Path("acme".into()))
        );
        let missing = pb::AddWebhookRequest {
            request_id: "r1".into(),
            sent_at_ms: 5,
            ..Default::default()
        };
        assert_eq!(missing.into_command().expect_err("no root").field, "root");
        let duplicate = pb::AddWebhookResponse::from_outcome(
            Outcome::Duplicate(Recorded::WebhookAdded { webhook_id: 3 }),
            9,
        )
        .expect("answers");
        assert_eq!((duplicate.webhook_id, duplicate.duplicate), (3, true));
        assert!(pb::RemoveWebhookResponse::from_outcome(Outcome::Done, 1).is_ok());
        assert!(pb::AddWebhookResponse::from_outcome(Outcome::Done, 1).is_err());
    }
}
