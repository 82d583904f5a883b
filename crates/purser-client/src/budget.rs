//! The request path's usual shape: reserve before the work, settle with its actual cost after
//! it, and release the hold when the work fails or is abandoned.
//!
//! ```no_run
//! # async fn work() -> Result<i64, Box<dyn std::error::Error>> { Ok(0) }
//! # async fn example(client: purser_client::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use purser_client::{Budget, Reserved};
//! let budget = Budget::new(client, "acme/research/alice", "usd");
//! match budget.reserve(5_000).await? {
//!     Reserved::Granted(hold) => {
//!         // An error here drops `hold`, which releases it.
//!         let actual = work().await?;
//!         hold.settle(actual).await?;
//!     }
//!     Reserved::Denied(denied) => println!("denied by {}", denied.node_path),
//! }
//! # Ok(()) }
//! ```

use crate::{pb, Client, ClientError, Mutated};

/// How long a hold lives unless told otherwise: long enough for a model call, short enough
/// that an abandoned hold does not block the budget for long.
pub const HOLD_TTL_MS_DEFAULT: u64 = 60_000;

/// Spending from one node in one currency. Cheap to clone.
#[derive(Clone)]
pub struct Budget {
    client: Client,
    node: pb::NodeRef,
    currency: String,
    ttl_ms: u64,
    attributes: Option<pb::Attributes>,
}

/// The answer to a reservation: a denial is an answer, not an error.
#[derive(Debug)]
pub enum Reserved {
    Granted(Hold),
    Denied(pb::Denied),
}

/// An open hold. Settle it or release it; dropped open (an error, a cancelled task), it is
/// released by a task spawned on the current tokio runtime, best effort: without a runtime,
/// or if that release fails, the hold ends at its TTL.
#[derive(Debug)]
pub struct Hold {
    client: Client,
    granted: pb::Granted,
    open: bool,
}

impl Budget {
    /// `node` is a path (`acme/research/alice`).
    pub fn new(client: Client, node: impl Into<String>, currency: impl Into<String>) -> Budget {
        let node = pb::NodeRef {
            node: Some(pb::node_ref::Node::Path(node.into())),
        };
        Budget::of(client, node, currency)
    }

    /// A node named by id or path.
    pub fn of(client: Client, node: pb::NodeRef, currency: impl Into<String>) -> Budget {
        Budget {
            client,
            node,
            currency: currency.into(),
            ttl_ms: HOLD_TTL_MS_DEFAULT,
            attributes: None,
        }
    }

    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Budget {
        self.ttl_ms = ttl_ms;
        self
    }

    /// Who and what spends, carried into usage events and reports.
    pub fn with_attributes(mut self, attributes: pb::Attributes) -> Budget {
        self.attributes = Some(attributes);
        self
    }

    /// Holds exactly `amount` minor units, or answers the denial.
    pub async fn reserve(&self, amount: i64) -> Result<Reserved, ClientError> {
        self.reserve_amount(pb::reserve_request::Amount::Exact(amount))
            .await
    }

    /// Holds the largest amount in `min..=max` that every rule allows, or answers the denial.
    pub async fn reserve_up_to(&self, min: i64, max: i64) -> Result<Reserved, ClientError> {
        let range = pb::AmountRange { min, max };
        self.reserve_amount(pb::reserve_request::Amount::Range(range))
            .await
    }

    async fn reserve_amount(
        &self,
        amount: pb::reserve_request::Amount,
    ) -> Result<Reserved, ClientError> {
        let request = pb::ReserveRequest {
            node: Some(self.node.clone()),
            currency: self.currency.clone(),
            amount: Some(amount),
            ttl_ms: self.ttl_ms,
            attributes: self.attributes.clone(),
            ..Default::default()
        };
        let response = self.client.reserve(request).await?.into_inner();
        match response.result {
            Some(pb::reserve_response::Result::Granted(granted)) => Ok(Reserved::Granted(Hold {
                client: self.client.clone(),
                granted,
                open: true,
            })),
            Some(pb::reserve_response::Result::Denied(denied)) => Ok(Reserved::Denied(denied)),
            None => Err(ClientError::Status(tonic::Status::internal(
                "a reserve answer with neither grant nor denial",
            ))),
        }
    }
}

impl Hold {
    /// What was granted: the reservation id, the amount (for a range, the amount chosen),
    /// its expiry and funding plan.
    pub fn granted(&self) -> &pb::Granted {
        &self.granted
    }

    pub fn reservation_id(&self) -> u64 {
        self.granted.reservation_id
    }

    pub fn amount(&self) -> u64 {
        self.granted.amount
    }

    /// Charges `actual` minor units (above the hold too: that is an overrun) and releases the
    /// rest. If the settle fails, the hold is released as on drop.
    pub async fn settle(self, actual: i64) -> Result<Mutated<pb::CommitResponse>, ClientError> {
        self.settle_with(pb::commit_request::Actual::Amount(actual))
            .await
    }

    /// Charges the price of `tokens` from the root's price book.
    pub async fn settle_tokens(
        self,
        tokens: pb::TokenUsage,
    ) -> Result<Mutated<pb::CommitResponse>, ClientError> {
        self.settle_with(pb::commit_request::Actual::Tokens(tokens))
            .await
    }

    async fn settle_with(
        mut self,
        actual: pb::commit_request::Actual,
    ) -> Result<Mutated<pb::CommitResponse>, ClientError> {
        let request = pb::CommitRequest {
            reservation_id: self.granted.reservation_id,
            actual: Some(actual),
            ..Default::default()
        };
        let settled = self.client.settle(request).await?;
        self.open = false;
        Ok(settled)
    }

    /// Cancels the hold without charging. A failed release is not tried again: the hold then
    /// ends at its TTL.
    pub async fn release(mut self) -> Result<Mutated<pb::ReleaseResponse>, ClientError> {
        self.open = false;
        self.client.release(release_of(&self.granted)).await
    }
}

fn release_of(granted: &pb::Granted) -> pb::ReleaseRequest {
    pb::ReleaseRequest {
        reservation_id: granted.reservation_id,
        ..Default::default()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let reservation_id = self.granted.reservation_id;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "hold {reservation_id} dropped outside a tokio runtime: it ends at its TTL"
            );
            return;
        };
        let client = self.client.clone();
        let request = release_of(&self.granted);
        runtime.spawn(async move {
            if let Err(e) = client.release(request).await {
                tracing::warn!("releasing dropped hold {reservation_id}: {e}");
            }
        });
    }
}
