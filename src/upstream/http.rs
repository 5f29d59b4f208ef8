//! The outbound HTTP/1.1 client (hyper, pooled keep-alive connections): one exchange with
//! a whole-exchange deadline and a bound on the answer's size, its failures sorted by
//! what they mean for a retry: a refused connection never reached the service, anything
//! after the request was written may have.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No connection: the request was not sent (safe to send elsewhere).
    #[error("connection failed: {0}")]
    Refused(String),
    /// No whole answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke after the request was (or may have been) written.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The answer's body was larger than allowed.
    #[error("answer body over {0} bytes")]
    TooLarge(usize),
}

impl Failure {
    /// Whether the service may have received the request.
    pub fn maybe_sent(&self) -> bool {
        !matches!(self, Failure::Refused(_))
    }

    /// The outcome's name in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Failure::Refused(_) => "refused",
            Failure::Timeout(_) => "timeout",
            Failure::Lost(_) => "lost",
            Failure::TooLarge(_) => "too_large",
        }
    }
}

/// A pooled client shared by every upstream.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// A client keeping idle connections for 30 s, connecting within 2 s.
    pub fn new() -> Http {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(c);
        Http { client }
    }

    /// Sends `req` and reads the whole answer within `deadline`, its body at most `max`
    /// bytes.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        deadline: Duration,
        max: usize,
    ) -> Result<Response<Bytes>, Failure> {
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Refused(chain(&e))
                } else {
                    Failure::Lost(chain(&e))
                }
            })?;
            let (parts, body) = resp.into_parts();
            let declared = parts
                .headers
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max as u64) {
                return Err(Failure::TooLarge(max));
            }
            let bytes = Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Failure::TooLarge(max)
                    } else {
                        Failure::Lost(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Response::from_parts(parts, bytes))
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout(deadline)))
    }
}

/// An error with its causes, `outer: inner: …` (hyper's own message is often just
/// "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
