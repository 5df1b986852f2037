//! The library behind the `swarm` command: starting every service in one process
//! ([`stack`]), the load generator behind `swarm bench` ([`bench`]), and the measure of what
//! observability costs ([`overhead`]).

pub mod agent;
pub mod bench;
pub mod keys;
pub mod overhead;
pub mod stack;
