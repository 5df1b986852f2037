//! The library behind the `swarm` command: starting every service in one process
//! ([`stack`]), the example agent ([`agent`]), key management on the key database ([`keys`])
//! and the API from a terminal ([`client`]).

pub mod agent;
pub mod client;
pub mod keys;
pub mod mcp;
pub mod stack;
