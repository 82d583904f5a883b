//! `purser webhook add|list|remove|test`: a root's webhook subscriptions.

use clap::{Args, Subcommand};
use purser_client::pb;

use crate::budget::{Meta, RequestArgs};
use crate::output::{print_json, Obj};
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

fn print_mutation(ctx: &Ctx, meta: &Meta, duplicate: bool, log_index: u64, obj: Obj, text: String) {
    if ctx.json() {
        let mut all = meta.obj(duplicate, log_index);
        all.0.extend(obj.0);
        print_json(&all.value());
    } else if duplicate {
        println!("{text} (duplicate request: already applied)");
    } else {
        println!("{text}");
    }
}

async fn add(ctx: &Ctx, a: AddArgs) -> Result<Done, CliError> {
    let root = parse::node_path(&a.root)?;
    let meta = a.request.meta();
    let request = pb::AddWebhookRequest {
        request_id: meta.request_id.clone(),
        sent_at_ms: meta.sent_at_ms,
        root: Some(parse::node_ref(&root)),
        url: a.url.clone(),
        secret: a.secret,
        kinds: a.kinds.clone(),
    };
    let r = rpc!(ctx, webhook_client::WebhookClient, add_webhook, request)?;
    let obj = Obj::new()
        .set("webhook_id", r.webhook_id)
        .set("root", root.clone())
        .set("url", a.url.clone())
        .set("kinds", a.kinds.clone());
    let text = format!(
        "webhook {} delivers {} of {root} to {}",
        r.webhook_id,
        a.kinds.join(", "),
        a.url
    );
    print_mutation(ctx, &meta, r.duplicate, r.log_index, obj, text);
    Ok(Done::Ok)
}

async fn list(ctx: &Ctx, root: String) -> Result<Done, CliError> {
    let root = parse::node_path(&root)?;
    let request = pb::ListWebhooksRequest {
        root: Some(parse::node_ref(&root)),
    };
    let r = rpc!(ctx, webhook_client::WebhookClient, list_webhooks, request)?;
    if ctx.json() {
        let hooks: Vec<serde_json::Value> = r
            .webhooks
            .iter()
            .map(|w| {
                Obj::new()
                    .set("id", w.id)
                    .set("root_id", w.root_id)
                    .set("root", w.root_path.clone())
                    .set("url", w.url.clone())
                    .set("kinds", w.kinds.clone())
                    .set("delivered_through", w.delivered_through)
                    .value()
            })
            .collect();
        let obj = Obj::new()
            .set("root", root)
            .set("events_written", r.events_written)
            .set("webhooks", hooks);
        print_json(&obj.value());
        return Ok(Done::Ok);
    }
    if r.webhooks.is_empty() {
        println!("{root} has no webhooks");
        return Ok(Done::Ok);
    }
    println!("{root}: events written up to {}", r.events_written);
    println!(
        "  {:<6}  {:<18}  {:<40}  KINDS",
        "ID", "DELIVERED_THROUGH", "URL"
    );
    for w in &r.webhooks {
        println!(
            "  {:<6}  {:<18}  {:<40}  {}",
            w.id,
            w.delivered_through,
            w.url,
            w.kinds.join(",")
        );
    }
    Ok(Done::Ok)
}

async fn remove(ctx: &Ctx, id: u64, request: RequestArgs) -> Result<Done, CliError> {
    let meta = request.meta();
    let request = pb::RemoveWebhookRequest {
        request_id: meta.request_id.clone(),
        sent_at_ms: meta.sent_at_ms,
        webhook_id: id,
    };
    let r = rpc!(ctx, webhook_client::WebhookClient, remove_webhook, request)?;
    let obj = Obj::new().set("webhook_id", id);
    print_mutation(
        ctx,
        &meta,
        r.duplicate,
        r.log_index,
        obj,
        format!("removed webhook {id}"),
    );
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
    let r = rpc!(ctx, webhook_client::WebhookClient, test_webhook, request)?;
    let ok = |t: &pb::WebhookTestResult| (200..300).contains(&t.http_status);
    if ctx.json() {
        let results: Vec<serde_json::Value> = r
            .results
            .iter()
            .map(|t| {
                Obj::new()
                    .set("webhook_id", t.webhook_id)
                    .set("url", t.url.clone())
                    .set("ok", ok(t))
                    .set("http_status", (t.http_status != 0).then_some(t.http_status))
                    .set("error", (!t.error.is_empty()).then(|| t.error.clone()))
                    .set("elapsed_ms", t.elapsed_ms)
                    .value()
            })
            .collect();
        print_json(&Obj::new().set("results", results).value());
    } else if r.results.is_empty() {
        println!("{target} has no webhooks");
    } else {
        for t in &r.results {
            let answer = if t.http_status != 0 {
                format!("HTTP {}", t.http_status)
            } else {
                format!("no answer: {}", t.error)
            };
            println!(
                "webhook {} {}: {answer} in {} ms",
                t.webhook_id, t.url, t.elapsed_ms
            );
        }
    }
    if r.results.iter().all(ok) {
        Ok(Done::Ok)
    } else {
        Err("a webhook endpoint did not answer 2xx".into())
    }
}
