//! The generated code of `proto/scaigrid/node/v1/node.proto`.

#![allow(clippy::all, clippy::pedantic, missing_docs, reason = "generated code")]

tonic::include_proto!("scaigrid.node.v1");
