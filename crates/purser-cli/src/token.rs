//! `purser token create|list|revoke`, and which token the CLI sends: `--token`, then
//! `PURSER_TOKEN`, then the file of `--token-file` / `PURSER_TOKEN_FILE`, then
//! `./purser-data/admin.token` (what `purser dev` writes) when it exists.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use purser_client::pb;

use crate::budget::RequestArgs;
use crate::render::token::{Created, Listed, Revoked};
use crate::{parse, CliError, Ctx, Done};

/// Where `purser dev` run from the same directory keeps its `/` admin token.
const DEV_TOKEN_FILE: &str = "purser-data/admin.token";

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token no wider than yours and print it (once: only its hash is kept).
    Create {
        /// `/` (the whole cluster) or a node's path: the token acts there and below.
        #[arg(long)]
        scope: String,
        /// viewer (read), editor (viewer + reserve, commit, release, charge) or admin
        /// (editor + configuration strictly below the scope node, and tokens).
        #[arg(long)]
        access: String,
        /// How long it lasts (90s, 15m, 1h, 7d); until revoked when absent.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// A name for people reading `token list`.
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Tokens at or below a scope (default: your token's); never their secrets.
    List {
        /// `/` or a node's path.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Revoke a token: it authorizes nothing from then on, on every member.
    Revoke {
        /// The token id (from `token create` or `token list`).
        id: u64,
        #[command(flatten)]
        request: RequestArgs,
    },
}

/// The token to send, in the documented order; `None` when there is none (a member without
/// authentication, or a call that needs none).
pub fn resolve(flag: Option<String>, file: Option<PathBuf>) -> Result<Option<String>, CliError> {
    if let Some(token) = flag {
        return Ok(Some(token.trim().to_owned()));
    }
    let file = file.or_else(|| {
        let dev = PathBuf::from(DEV_TOKEN_FILE);
        dev.exists().then_some(dev)
    });
    file.map(|f| read_token(&f)).transpose()
}

fn read_token(file: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError(format!("--token-file {}: {e}", file.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError(format!("--token-file {}: empty", file.display())));
    }
    Ok(token.to_owned())
}

pub async fn run(ctx: &Ctx, command: TokenCommand) -> Result<Done, CliError> {
    match command {
        TokenCommand::Create {
            scope,
            access,
            ttl,
            name,
            request,
        } => {
            let access = match access.as_str() {
                "viewer" => pb::Access::Viewer,
                "editor" => pb::Access::Editor,
                "admin" => pb::Access::Admin,
                other => {
                    return Err(CliError(format!(
                        "--access {other:?}: viewer, editor or admin"
                    )))
                }
            };
            let ttl_ms = ttl
                .map(|t| parse::duration_ms(&t).map_err(|e| CliError(format!("--ttl: {e}"))))
                .transpose()?
                .unwrap_or(0);
            let (request_id, sent_at_ms) = request.ids();
            let answer = ctx
                .client
                .create_token(pb::CreateTokenRequest {
                    request_id,
                    sent_at_ms,
                    scope,
                    access: access as i32,
                    name,
                    ttl_ms,
                })
                .await?;
            ctx.print(&Created(answer.into_inner()));
            Ok(Done::Ok)
        }
        TokenCommand::List { scope } => {
            let answer = ctx
                .client
                .list_tokens(pb::ListTokensRequest {
                    scope: scope.unwrap_or_default(),
                })
                .await?;
            ctx.print(&Listed(answer.tokens));
            Ok(Done::Ok)
        }
        TokenCommand::Revoke { id, request } => {
            let (request_id, sent_at_ms) = request.ids();
            let answer = ctx
                .client
                .revoke_token(pb::RevokeTokenRequest {
                    request_id,
                    sent_at_ms,
                    token_id: id,
                })
                .await?;
            ctx.print(&Revoked {
                id,
                log_index: answer.log_index,
            });
            Ok(Done::Ok)
        }
    }
}
