mod alerts;
mod bad_input;
mod burst;
mod cli;
mod ipmi;
mod pue;
