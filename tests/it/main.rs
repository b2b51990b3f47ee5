//! All integration tests in one binary (one link of the candle stack instead of many).
//! Each stage has its own module; `common` holds the shared helpers.

mod action;
mod archs;
mod bad_inputs;
mod build;
mod card;
mod cli;
mod common;
mod device;
mod eval;
mod front;
mod gguf;
mod heal;
mod hostile_hub;
mod hub;
mod layout;
mod memory;
mod one_job;
mod parallel;
mod search;
mod search_e2e;
mod study;
mod testhub;
mod tokenizer_choice;
mod torch_bin;
mod transfer_edges;
mod verify;
