//! The library behind the `swarm` command: starting every service in one process
//! ([`stack`]), the example agent ([`agent`]) and key management on the key database ([`keys`]).

pub mod agent;
pub mod keys;
pub mod stack;
