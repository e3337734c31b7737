//! Black-box tests: the real server on a free port, driven over real HTTP and WebSockets.

mod account_lifecycle;
mod accounts;
mod backup;
mod connections;
mod documents;
mod graphql_ws;
mod helpers;
mod http;
mod inbox;
mod instances;
mod limits;
mod messages;
mod metrics;
mod presence;
mod process;
mod rate_limits;
mod read_state;
mod rest;
mod rooms;
mod sessions;
mod subscriptions;
#[path = "../support/mod.rs"]
mod support;
mod teams;
mod web;
