//! The shared token of edges and nodes (`[engines] node_token`, `SCAIGRID_NODE_TOKEN`).
//!
//! A node reachable over the network would otherwise run anyone's inference and hand
//! out what is warm on it, so every call to it (the health service included) carries
//! `authorization: Bearer <token>`. The node keeps only the token's SHA-256 and
//! compares digests, so a comparison reveals nothing about the token's bytes. A node
//! on a Unix socket or loopback may go without one: only this machine reaches it.

use sha2::{Digest, Sha256};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::Secret;

const HEADER: &str = "authorization";

/// The client side: adds the token to every call (nothing without one), and the trace
/// context of the span the call is made in.
#[derive(Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    pub fn new(token: Option<&Secret>) -> anyhow::Result<Bearer> {
        let value = token
            .map(|token| format!("Bearer {}", token.expose()).parse())
            .transpose()
            .map_err(|_| anyhow::anyhow!("engines.node_token: only visible ASCII is allowed"))?;
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(HEADER, value.clone());
        }
        if let Some(id) = crate::request_id::current()
            && let Ok(id) = AsciiMetadataValue::try_from(id)
        {
            request.metadata_mut().insert("x-request-id", id);
        }
        for (name, value) in crate::trace_context::outgoing().pairs() {
            if let Ok(value) = AsciiMetadataValue::try_from(value.as_bytes()) {
                request.metadata_mut().insert(name, value);
            }
        }
        Ok(request)
    }
}

/// The node side: refuses a call without the token (`UNAUTHENTICATED`).
#[derive(Clone)]
pub struct Guard(Option<[u8; 32]>);

impl Guard {
    pub fn new(token: Option<&Secret>) -> Guard {
        Guard(token.map(|token| digest(token.expose().as_bytes())))
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get(HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match presented {
            Some(token) if digest(token.as_bytes()) == *expected => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong node token")),
            None => Err(Status::unauthenticated(
                "this node requires a token (engines.node_token)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(guard: &mut Guard, bearer: &mut Bearer) -> Result<(), Status> {
        let request = bearer.call(Request::new(())).unwrap();
        guard.call(request).map(|_| ())
    }

    #[test]
    fn only_the_right_token_passes() {
        let token = Secret::new("a-node-token-of-32-characters-xx");
        let mut guard = Guard::new(Some(&token));
        assert!(call(&mut guard, &mut Bearer::new(Some(&token)).unwrap()).is_ok());
        let wrong = Secret::new("another-token-of-32-characters-x");
        let refused = call(&mut guard, &mut Bearer::new(Some(&wrong)).unwrap()).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let missing = call(&mut guard, &mut Bearer::default()).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().contains("requires a token"));
        // A node without a token takes every call.
        assert!(call(&mut Guard::new(None), &mut Bearer::default()).is_ok());
        assert!(Bearer::new(Some(&Secret::new("bad\ntoken-with-newline"))).is_err());
    }
}
