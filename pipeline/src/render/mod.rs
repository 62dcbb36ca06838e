//! PDF rendering in worker processes: the wire protocol, the worker (child side) and the pool
//! (parent side) that restarts workers that crash or hang.

pub mod pool;
pub mod protocol;
pub mod worker;
