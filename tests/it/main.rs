//! All integration tests in one binary (one link of the candle stack instead of many).
//! Each stage has its own module; `common` holds the shared helpers.

mod common;
mod action;
mod bad_inputs;
mod build;
mod card;
mod hub;
mod hostile_hub;
mod testhub;
mod search;
mod eval;
mod layout;
mod search_e2e;
mod cli;
mod verify;
mod transfer_edges;
mod device;
