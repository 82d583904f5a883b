//! `purser webhook add|list|remove|test`: a root's webhook subscriptions.

use clap::{Args, Subcommand};
use purser_client::pb;

use crate::budget::RequestArgs;
use crate::render::change::{WebhookAdded, WebhookRemoved};
use crate::render::webhook::{answered_2xx, Listed, Tested};
use crate::{parse, CliError, Ctx, Done};

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a root's events: the leader POSTs each one, signed, to URL (docs/cli.md).
    Add(AddArgs),
    /// A root's subscriptions and how far delivery has got.
    List {
        /// The root, e.g. acme.
        root: String,
    },
    /// Remove a subscription.
    Remove {
        /// The webhook id (from `webhook add` or `webhook list`).
        id: u64,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Send a signed {"kind":"test"} ping now, from the member that answers, and show what
    /// the endpoint replied (exit 1 unless every endpoint answered 2xx).
    Test {
        /// A webhook id, or a root (then each of its subscriptions is pinged).
        target: String,
    },
}

#[derive(Args)]
pub struct AddArgs {
    /// The root whose events are delivered, e.g. acme.
    pub root: String,
    /// Where to POST: https://host:port/path or http://host:port/path.
    #[arg(long)]
    pub url: String,
    /// The signing key, 16..=256 bytes (or set PURSER_WEBHOOK_SECRET, which keeps it out of
    /// the shell history).
    #[arg(long, env = "PURSER_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// An event kind to deliver (repeatable): usage, monetization, balance, governance, or
    /// one governance kind such as governance.threshold_crossed.
    #[arg(long = "kind", value_name = "KIND", required = true)]
    pub kinds: Vec<String>,
    #[command(flatten)]
    pub request: RequestArgs,
}

pub async fn run(ctx: &Ctx, command: WebhookCommand) -> Result<Done, CliError> {
    match command {
        WebhookCommand::Add(a) => add(ctx, a).await,
        WebhookCommand::List { root } => list(ctx, root).await,
        WebhookCommand::Remove { id, request } => remove(ctx, id, request).await,
        WebhookCommand::Test { target } => test(ctx, target).await,
    }
}

async fn add(ctx: &Ctx, a: AddArgs) -> Result<Done, CliError> {
    let root = parse::node_path(&a.root)?;
    let (request_id, sent_at_ms) = a.request.ids();
    let request = pb::AddWebhookRequest {
        request_id,
        sent_at_ms,
        root: Some(parse::node_ref(&root)),
        url: a.url.clone(),
        secret: a.secret,
        kinds: a.kinds.clone(),
    };
    let answer = ctx.client.add_webhook(request).await?;
    let change = WebhookAdded {
        webhook_id: answer.webhook_id,
        root,
        url: a.url,
        kinds: a.kinds,
    };
    ctx.print_change(&answer, change);
    Ok(Done::Ok)
}

async fn list(ctx: &Ctx, root: String) -> Result<Done, CliError> {
    let root = parse::node_path(&root)?;
    let request = pb::ListWebhooksRequest {
        root: Some(parse::node_ref(&root)),
    };
    let list = ctx.client.list_webhooks(request).await?;
    ctx.print(&Listed {
        root: &root,
        list: &list,
    });
    Ok(Done::Ok)
}

async fn remove(ctx: &Ctx, webhook_id: u64, request: RequestArgs) -> Result<Done, CliError> {
    let (request_id, sent_at_ms) = request.ids();
    let request = pb::RemoveWebhookRequest {
        request_id,
        sent_at_ms,
        webhook_id,
    };
    let answer = ctx.client.remove_webhook(request).await?;
    ctx.print_change(&answer, WebhookRemoved { webhook_id });
    Ok(Done::Ok)
}

async fn test(ctx: &Ctx, target: String) -> Result<Done, CliError> {
    let request = match target.parse::<u64>() {
        Ok(id) => pb::TestWebhookRequest {
            webhook_id: id,
            root: None,
        },
        Err(_) => pb::TestWebhookRequest {
            webhook_id: 0,
            root: Some(parse::node_ref(&parse::node_path(&target)?)),
        },
    };
    let results = ctx.client.test_webhook(request).await?.results;
    ctx.print(&Tested {
        target: &target,
        results: &results,
    });
    if results.iter().all(answered_2xx) {
        Ok(Done::Ok)
    } else {
        Err("a webhook endpoint did not answer 2xx".into())
    }
}
