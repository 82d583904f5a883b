//! What every client command works with: the client, the output format, and the two ways a
//! command ends.

use std::time::Duration;

use purser_client::{Acknowledged, Client, ClientConfig, ClientError, Mutated};

use crate::render::change::{Change, Changed};
use crate::render::{self, Ack, Format, Render};

/// What a command that did not fail ended with.
pub enum Done {
    Ok,
    /// A reservation or charge was refused: exit 3.
    Denied,
}

/// A one-line error for stderr; exit 1.
#[derive(Debug)]
pub struct CliError(pub String);

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError(message.to_owned())
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        CliError(match error {
            ClientError::Status(status) => {
                format!("{} ({})", status.message(), code_name(status.code()))
            }
            other => other.to_string(),
        })
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition => "failed precondition",
        Code::ResourceExhausted => "resource exhausted",
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "unauthenticated",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Internal => "internal error",
        Code::Unimplemented => "not implemented by the server",
        _ => "error",
    }
}

/// The client of the `--endpoint`s, and how to print.
pub struct Ctx {
    pub client: Client,
    pub format: Format,
    pub endpoints: Vec<String>,
    /// `--timeout`: how long a call keeps retrying.
    pub timeout: Duration,
    /// The bearer token every call carries.
    pub token: Option<String>,
    /// `--ca`: the CA (PEM) of the members' certificates; endpoints are then https.
    pub ca: Option<String>,
}

impl Ctx {
    pub fn new(
        endpoints: Vec<String>,
        format: Format,
        timeout: Duration,
        (token, ca): (Option<String>, Option<String>),
    ) -> Result<Ctx, CliError> {
        let base = ClientConfig {
            token: token.clone(),
            ca: ca.clone(),
            ..ClientConfig::default()
        };
        // A single attempt gets at most 5 s of --timeout, so that one unresponsive member
        // leaves time for the others.
        let config = ClientConfig {
            request_timeout: timeout.min(Duration::from_secs(5)),
            call_timeout: timeout,
            ..base
        };
        let client = Client::new(endpoints.clone(), config)
            .map_err(|e| CliError(format!("--endpoint: {e}")))?;
        Ok(Ctx {
            client,
            format,
            endpoints,
            timeout,
            token,
            ca,
        })
    }

    /// What every client of this command is configured with: the token and the CA.
    pub fn base_config(&self) -> ClientConfig {
        ClientConfig {
            token: self.token.clone(),
            ca: self.ca.clone(),
            ..ClientConfig::default()
        }
    }

    /// A member's client address as a URL: https when the command has a CA.
    pub fn endpoint_url(&self, address: &str) -> String {
        let address = address.trim();
        if address.contains("://") {
            address.to_owned()
        } else if self.ca.is_some() {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        }
    }

    /// Calls whose single attempts may take `at_least` (see `slow_client`).
    fn slow_config(&self, at_least: Duration) -> ClientConfig {
        let timeout = self.timeout.max(at_least);
        ClientConfig {
            request_timeout: timeout,
            call_timeout: timeout,
            ..self.base_config()
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    pub fn print(&self, what: &impl Render) {
        render::print(self.format, what);
    }

    /// Prints a mutation's acknowledgement with what it changed.
    pub fn print_change<T: Acknowledged>(&self, answer: &Mutated<T>, change: impl Change) {
        self.print(&Changed {
            ack: Ack::of(answer),
            change,
        });
    }

    /// A client of the same endpoints whose single attempts may take `at_least`, for calls
    /// that wait on the cluster (a learner catching up, a leader handing over).
    pub fn slow_client(&self, at_least: Duration) -> Result<Client, CliError> {
        Ok(Client::new(
            self.endpoints.clone(),
            self.slow_config(at_least),
        )?)
    }

    /// A client of the first endpoint alone, never redirected, whose single attempts may take
    /// `at_least`: for what a member does to itself (a snapshot).
    pub fn first_member(&self, at_least: Duration) -> Result<Client, CliError> {
        let endpoint = self
            .endpoints
            .first()
            .cloned()
            .ok_or_else(|| CliError("no --endpoint".into()))?;
        Ok(Client::member(endpoint, self.slow_config(at_least))?)
    }
}
