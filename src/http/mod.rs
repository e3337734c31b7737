//! What every transport does at its edge the same way: read who is calling (`auth`) and say why
//! a request is refused (`error`). GraphQL over HTTP and WebSocket, REST and Socket.IO all go
//! through these, so a token, an expiry or an error code means one thing on each.

pub mod auth;
pub mod error;

pub use error::Problem;
