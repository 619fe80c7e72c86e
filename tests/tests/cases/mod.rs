mod alerts;
mod bad_input;
mod burst;
mod cli;
mod ipmi;
mod modbus;
mod pue;
mod snmp;
