//! Confab: a self-hosted GraphQL chat server.
//!
//! Layers, outermost first (see `ARCHITECTURE.md` in the design notes):
//! - [`server`]: axum routes, middleware, startup and graceful shutdown;
//! - [`graphql`]: the schema (a library) and its HTTP and WebSocket transports;
//! - [`rest`]: the original service's REST routes and their OpenAPI document;
//! - [`socketio`]: the original service's Socket.IO events;
//! - [`web`]: the chat page and GraphiQL, compiled in, and the security headers on every response;
//! - [`service`]: `ChatService`, the one place for chat rules;
//! - [`store`]: persistence behind one trait (SQLite embedded; MongoDB next);
//! - [`bus`]: room events from the service to subscribers;
//! - [`auth`]: argon2id passwords, JWT access tokens, the `Caller`;
//! - [`model`], [`error`], [`config`]: the shared vocabulary;
//! - [`telemetry`]: logging, set up the same way by every process that runs the server.

pub mod auth;
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
