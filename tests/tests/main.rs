//! dcwatt end-to-end tests: real agent and collector processes, real MQTT brokers (the
//! embedded rumqttd and Mosquitto), HTTP on loopback. One test binary, cases in `cases/`.

mod cases;
