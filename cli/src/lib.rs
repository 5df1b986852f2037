//! The library behind the `swarm` command: starting every service in one process
//! ([`stack`]), and the load generator behind `swarm bench` ([`bench`]).

pub mod agent;
pub mod bench;
pub mod stack;
