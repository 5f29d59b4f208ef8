//! Generic handlers that need no domain knowledge: useful for bridging streams (e.g. a
//! `.v1` → `.v2` migration) and as the reference workloads of the benchmarks.

pub mod count_by_user;
pub mod forward;
pub mod remote;

pub use count_by_user::CountByUser;
pub use forward::Forward;
pub use remote::Remote;
