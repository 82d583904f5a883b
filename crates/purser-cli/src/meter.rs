//! `purser watch`: the event stream as JSON lines, resumed without gaps or duplicates across
//! disconnects and leader changes (any member serves it; indices are the same everywhere).

use std::time::Duration;

use clap::Args;
use purser_client::pb;

use crate::render::meter::print_event;
use crate::{parse, CliError, Ctx, Done};

#[derive(Args)]
pub struct WatchArgs {
    /// Only events about this node or a node below it.
    pub path: Option<String>,
    /// The first event index to print (1: from the beginning, the default).
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Only these kinds (repeatable): usage, monetization, balance, governance, or one
    /// governance kind such as governance.threshold_crossed.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// Streams until interrupted (or `--limit`). A broken stream is reopened, on whichever member
/// answers, from the index after the last one printed; an index no member keeps any more is
/// an error.
pub async fn watch(ctx: &Ctx, a: WatchArgs) -> Result<Done, CliError> {
    let mut next = a.from.max(1);
    let mut printed = 0u64;
    loop {
        let request = pb::WatchRequest {
            from_index: next,
            kinds: a.kinds.clone(),
            node: a.path.as_deref().map(parse::node_ref),
        };
        let mut stream = ctx.client.watch(request).await?;
        loop {
            let event = match stream.message().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::OutOfRange => {
                    return Err(CliError(status.message().to_owned()));
                }
                Err(status) => {
                    tracing::warn!(
                        "watch interrupted ({}); resuming at {next}",
                        status.message()
                    );
                    break;
                }
            };
            print_event(&event).map_err(|e| CliError(format!("stdout: {e}")))?;
            next = event.index + 1;
            printed += 1;
            if a.limit.is_some_and(|limit| printed >= limit) {
                return Ok(Done::Ok);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
