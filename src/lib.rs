//! Confab: a self-hosted GraphQL chat server.
//!
//! Layers, outermost first (`ARCHITECTURE.md` at the repository's root says how a message flows
//! through them, and where each concern lives):
//! - [`server`]: startup, the accept loop (connection caps, timeouts), routes, shutdown;
//! - [`graphql`]: the schema (a library), the checks every document passes, and its HTTP and
//!   WebSocket transports;
//! - [`rest`]: the original service's REST routes and their OpenAPI document;
//! - [`socketio`]: the original service's Socket.IO events;
//! - [`web`]: the chat page and GraphiQL, compiled in, and the security headers on every response;
//! - [`http`]: what every transport does alike at its edge: who is calling, and errors as JSON;
//! - [`service`]: `ChatService`, the one place for chat rules, and the rate limits;
//! - [`store`]: persistence behind the store traits (SQLite embedded, MongoDB);
//! - [`bus`]: room events from the service to subscribers (in process, or through Redis);
//! - [`auth`]: argon2id passwords, JWT access tokens and their signing key, the `Caller`;
//! - [`model`], [`error`], [`config`]: the shared vocabulary;
//! - [`backup`]: `confab backup` and `confab restore`;
//! - [`metrics`], [`telemetry`]: `/metrics`, and logging set up the same way by every process.

pub mod auth;
pub mod backup;
pub mod bus;
pub mod config;
pub mod error;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod model;
pub mod rest;
pub mod server;
pub mod service;
pub mod socketio;
pub mod store;
pub mod telemetry;
pub mod web;
