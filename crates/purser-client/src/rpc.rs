//! One typed method per RPC of `purser.v1`, each a thin shell over the engine in
//! `client.rs`. A mutating request gets its request id and first send time filled in once,
//! before the first attempt, so that every retry sends the identical request and the cluster
//! can answer it as a duplicate instead of applying it twice.

use std::future::Future;
use std::ops::Deref;

use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::{new_request_id, now_ms, pb, Client, ClientError};

/// A request that changes the state, carrying the id and first send time that make its
/// retries safe.
pub trait Mutation: Clone {
    /// The request's `request_id` and `sent_at_ms`.
    fn ids_mut(&mut self) -> (&mut String, &mut u64);

    /// Fills what the caller left unset (an empty id gets [`new_request_id`], a zero time
    /// [`now_ms`]) and returns the two as the request now carries them.
    fn stamp(&mut self) -> (String, u64) {
        let (request_id, sent_at_ms) = self.ids_mut();
        if request_id.is_empty() {
            *request_id = new_request_id();
        }
        if *sent_at_ms == 0 {
            *sent_at_ms = now_ms();
        }
        (request_id.clone(), *sent_at_ms)
    }
}

/// What every answer to a [`Mutation`] says besides its result.
pub trait Acknowledged {
    /// The Raft log index the command was applied at (for a denial answered without a log
    /// write, the index the decision was made at).
    fn log_index(&self) -> u64;
    /// The request id was seen before with the same payload: nothing was applied again.
    fn duplicate(&self) -> bool;
    /// What the first attempt did; set iff `duplicate`.
    fn first_outcome(&self) -> Option<&pb::Recorded>;
}

/// The answer to a mutating call, with the request id and first send time it was sent with
/// (the caller's, or those the client filled in), and the token it acted for. Reads as the
/// response itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Mutated<T> {
    pub request_id: String,
    pub sent_at_ms: u64,
    /// The id of the token the cluster acted for (none without authentication).
    pub actor: Option<u64>,
    pub response: T,
}

impl<T> Mutated<T> {
    pub fn into_inner(self) -> T {
        self.response
    }
}

impl<T> Deref for Mutated<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.response
    }
}

impl Client {
    async fn send<R, T, F, Fut>(&self, request: R, send: F) -> Result<T, ClientError>
    where
        R: Clone,
        F: Fn(Channel, R) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call(|channel| send(channel, request.clone())).await
    }

    async fn mutate<R, T, F, Fut>(&self, mut request: R, send: F) -> Result<Mutated<T>, ClientError>
    where
        R: Mutation,
        F: Fn(Channel, R) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let (request_id, sent_at_ms) = request.stamp();
        let answer = self
            .call_answer(|channel| send(channel, request.clone()))
            .await?;
        let actor = answer
            .metadata()
            .get(purser_proto::TOKEN_ID_METADATA)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        Ok(Mutated {
            request_id,
            sent_at_ms,
            actor,
            response: answer.into_inner(),
        })
    }
}

/// Typed methods that send their request as given.
macro_rules! calls {
    ($client:ty {
        $( $(#[$doc:meta])* $name:ident => $rpc:ident($request:ty) -> $response:ty; )*
    }) => {
        impl Client {
            $(
                $(#[$doc])*
                pub async fn $name(&self, request: $request) -> Result<$response, ClientError> {
                    self.send(request, |channel, request| {
                        let request = self.authorized(request);
                        async move { <$client>::new(channel).$rpc(request).await }
                    })
                    .await
                }
            )*
        }
    };
}

/// Typed methods that stamp their request (see [`Mutation::stamp`]) and answer [`Mutated`].
macro_rules! mutations {
    ($client:ty {
        $( $(#[$doc:meta])* $name:ident => $rpc:ident($request:ty) -> $response:ty; )*
    }) => {
        $(
            impl Mutation for $request {
                fn ids_mut(&mut self) -> (&mut String, &mut u64) {
                    (&mut self.request_id, &mut self.sent_at_ms)
                }
            }

            impl Acknowledged for $response {
                fn log_index(&self) -> u64 {
                    self.log_index
                }
                fn duplicate(&self) -> bool {
                    self.duplicate
                }
                fn first_outcome(&self) -> Option<&pb::Recorded> {
                    self.first_outcome.as_ref()
                }
            }
        )*

        impl Client {
            $(
                $(#[$doc])*
                pub async fn $name(
                    &self,
                    request: $request,
                ) -> Result<Mutated<$response>, ClientError> {
                    self.mutate(request, |channel, request| {
                        let request = self.authorized(request);
                        async move { <$client>::new(channel).$rpc(request).await }
                    })
                    .await
                }
            )*
        }
    };
}

mutations!(pb::budget_client::BudgetClient<Channel> {
    /// Holds an amount at the node and every ancestor, or answers a typed denial.
    reserve => reserve(pb::ReserveRequest) -> pb::ReserveResponse;
    /// Settles a hold with its actual cost (the `Commit` RPC; the CLI's `purser commit`).
    settle => commit(pb::CommitRequest) -> pb::CommitResponse;
    /// Cancels a hold without charging.
    release => release(pb::ReleaseRequest) -> pb::ReleaseResponse;
    /// Reserves and settles in one command, for a cost known after the fact.
    charge => charge(pb::ChargeRequest) -> pb::ChargeResponse;
});

calls!(pb::budget_client::BudgetClient<Channel> {
    show => show(pb::ShowRequest) -> pb::ShowResponse;
    usage => usage(pb::UsageRequest) -> pb::UsageResponse;
    holds => holds(pb::HoldsRequest) -> pb::HoldsResponse;
    grants => grants(pb::GrantsRequest) -> pb::GrantsResponse;
    /// Sent as given: each item carries its own request id (the [`crate::Coalescer`] fills
    /// them in).
    batch => batch(pb::BatchRequest) -> pb::BatchResponse;
});

mutations!(pb::admin_client::AdminClient<Channel> {
    create_node => create_node(pb::CreateNodeRequest) -> pb::CreateNodeResponse;
    move_node => move_node(pb::MoveNodeRequest) -> pb::MoveNodeResponse;
    close_node => close_node(pb::CloseNodeRequest) -> pb::CloseNodeResponse;
    pause_node => pause_node(pb::PauseNodeRequest) -> pb::PauseNodeResponse;
    resume_node => resume_node(pb::ResumeNodeRequest) -> pb::ResumeNodeResponse;
    set_limit => set_limit(pb::SetLimitRequest) -> pb::SetLimitResponse;
    remove_limit => remove_limit(pb::RemoveLimitRequest) -> pb::RemoveLimitResponse;
    set_rate_limit => set_rate_limit(pb::SetRateLimitRequest) -> pb::SetRateLimitResponse;
    remove_rate_limit =>
        remove_rate_limit(pb::RemoveRateLimitRequest) -> pb::RemoveRateLimitResponse;
    add_grant => add_grant(pb::AddGrantRequest) -> pb::AddGrantResponse;
    define_role => define_role(pb::DefineRoleRequest) -> pb::DefineRoleResponse;
    remove_role => remove_role(pb::RemoveRoleRequest) -> pb::RemoveRoleResponse;
    assign_roles => assign_roles(pb::AssignRolesRequest) -> pb::AssignRolesResponse;
    set_role_resolution =>
        set_role_resolution(pb::SetRoleResolutionRequest) -> pb::SetRoleResolutionResponse;
    set_price => set_price(pb::SetPriceRequest) -> pb::SetPriceResponse;
    remove_price => remove_price(pb::RemovePriceRequest) -> pb::RemovePriceResponse;
    set_config => set_config(pb::SetConfigRequest) -> pb::SetConfigResponse;
});

calls!(pb::cluster_client::ClusterClient<Channel> {
    init => init(pb::InitRequest) -> pb::InitResponse;
    add_learner => add_learner(pb::AddLearnerRequest) -> pb::AddLearnerResponse;
    promote => promote(pb::PromoteRequest) -> pb::PromoteResponse;
    remove => remove(pb::RemoveRequest) -> pb::RemoveResponse;
    transfer_leader => transfer_leader(pb::TransferLeaderRequest) -> pb::TransferLeaderResponse;
    /// The answering member's own view (see [`Client::member`]).
    status => status(pb::StatusRequest) -> pb::StatusResponse;
    /// The answering member's own figures (see [`Client::member`]).
    stats => stats(pb::StatsRequest) -> pb::StatsResponse;
    /// Snapshots the answering member (see [`Client::member`]).
    snapshot => snapshot(pb::SnapshotRequest) -> pb::SnapshotResponse;
});

calls!(pb::meter_client::MeterClient<Channel> {
    /// The event stream, opened with retries; the stream itself is not resumed on a cut (a
    /// caller reconnects from its last index + 1).
    watch => watch(pb::WatchRequest) -> tonic::Streaming<pb::WatchEvent>;
});

calls!(pb::reports_client::ReportsClient<Channel> {
    report => report(pb::ReportRequest) -> pb::ReportResponse;
});

mutations!(pb::webhook_client::WebhookClient<Channel> {
    add_webhook => add_webhook(pb::AddWebhookRequest) -> pb::AddWebhookResponse;
    remove_webhook => remove_webhook(pb::RemoveWebhookRequest) -> pb::RemoveWebhookResponse;
});

calls!(pb::webhook_client::WebhookClient<Channel> {
    list_webhooks => list_webhooks(pb::ListWebhooksRequest) -> pb::ListWebhooksResponse;
    test_webhook => test_webhook(pb::TestWebhookRequest) -> pb::TestWebhookResponse;
});

mutations!(pb::tokens_client::TokensClient<Channel> {
    revoke_token => revoke_token(pb::RevokeTokenRequest) -> pb::RevokeTokenResponse;
});

impl Mutation for pb::CreateTokenRequest {
    fn ids_mut(&mut self) -> (&mut String, &mut u64) {
        (&mut self.request_id, &mut self.sent_at_ms)
    }
}

impl Client {
    /// Creates a token no wider than the caller's; the answer carries its secret, once (a
    /// retry of a creation that took effect is refused: the secret is not kept to answer
    /// again).
    pub async fn create_token(
        &self,
        request: pb::CreateTokenRequest,
    ) -> Result<Mutated<pb::CreateTokenResponse>, ClientError> {
        self.mutate(request, |channel, request| {
            let request = self.authorized(request);
            async move {
                pb::tokens_client::TokensClient::new(channel)
                    .create_token(request)
                    .await
            }
        })
        .await
    }
}

calls!(pb::tokens_client::TokensClient<Channel> {
    list_tokens => list_tokens(pb::ListTokensRequest) -> pb::ListTokensResponse;
});

calls!(crate::health::health_client::HealthClient<Channel> {
    /// Standard gRPC health checking of the answering member.
    health_check => check(crate::health::HealthCheckRequest) -> crate::health::HealthCheckResponse;
});

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::ClientConfig;

    /// A client whose address is never dialled: the tests below answer in place of a server.
    fn offline_client() -> Client {
        Client::new(["127.0.0.1:1"], ClientConfig::default()).unwrap()
    }

    /// Sends `request` through `mutate`, answering UNAVAILABLE to the first `failures`
    /// attempts; returns the answer and every request sent.
    async fn send_with_failures(
        request: pb::ReleaseRequest,
        failures: usize,
    ) -> (Mutated<pb::ReleaseResponse>, Vec<pb::ReleaseRequest>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let answer = offline_client()
            .mutate(request, |_channel, request: pb::ReleaseRequest| {
                let sent = sent.clone();
                async move {
                    let mut sent = sent.lock().unwrap();
                    sent.push(request.clone());
                    if sent.len() <= failures {
                        return Err(Status::unavailable("the answer was lost"));
                    }
                    Ok(Response::new(pb::ReleaseResponse {
                        reservation_id: request.reservation_id,
                        ..Default::default()
                    }))
                }
            })
            .await
            .unwrap();
        let sent = sent.lock().unwrap().clone();
        (answer, sent)
    }

    #[tokio::test]
    async fn missing_ids_are_filled_once_and_every_retry_is_identical() {
        let request = pb::ReleaseRequest {
            reservation_id: 7,
            ..Default::default()
        };
        let before = now_ms();
        let (answer, sent) = send_with_failures(request, 2).await;
        assert_eq!(sent.len(), 3, "two failed attempts, then the answer");
        assert!(!answer.request_id.is_empty());
        assert!(answer.sent_at_ms >= before);
        for attempt in &sent {
            assert_eq!(attempt.request_id, answer.request_id);
            assert_eq!(attempt.sent_at_ms, answer.sent_at_ms);
            assert_eq!(attempt.reservation_id, 7);
        }
        assert_eq!(
            answer.reservation_id, 7,
            "the response reads through Mutated"
        );
    }

    #[tokio::test]
    async fn ids_the_caller_set_are_sent_and_returned_unchanged() {
        let request = pb::ReleaseRequest {
            request_id: "mine-1".into(),
            sent_at_ms: 1_234,
            reservation_id: 7,
        };
        let (answer, sent) = send_with_failures(request, 1).await;
        assert_eq!(
            (answer.request_id.as_str(), answer.sent_at_ms),
            ("mine-1", 1_234)
        );
        assert!(sent
            .iter()
            .all(|r| r.request_id == "mine-1" && r.sent_at_ms == 1_234));
    }

    #[tokio::test]
    async fn attempts_sent_again_are_counted_with_the_newest_reason() {
        let client = offline_client();
        let attempts = Arc::new(Mutex::new(0));
        let answer = client
            .call(|_channel| {
                let attempts = attempts.clone();
                async move {
                    let mut attempts = attempts.lock().unwrap();
                    *attempts += 1;
                    match *attempts {
                        1 => Err(Status::unavailable("first lost")),
                        2 => Err(Status::unavailable("second lost")),
                        _ => Ok(Response::new(7)),
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(answer, 7);
        let retries = client.clone().retries();
        assert_eq!(retries.count, 2, "two attempts were sent again");
        assert!(
            retries.last.as_deref().unwrap().ends_with("second lost"),
            "{retries:?}"
        );
        // A refusal is not retried, so it counts nothing.
        let refused = client
            .call(|_channel| async { Err::<Response<()>, _>(Status::permission_denied("no")) })
            .await;
        assert!(refused.is_err());
        assert_eq!(client.retries().count, 2);
    }

    #[test]
    fn two_stamps_get_two_request_ids() {
        let mut a = pb::ChargeRequest::default();
        let mut b = pb::ChargeRequest::default();
        assert_ne!(a.stamp().0, b.stamp().0);
        assert_eq!(
            a.stamp(),
            a.clone().stamp(),
            "a stamped request keeps its ids"
        );
    }
}
