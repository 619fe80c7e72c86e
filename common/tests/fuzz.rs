//! Property-driven fuzzing of what the network reaches first: the payload decoder and the
//! topic parser. Bounded in time (a few thousand cases), so it runs in CI on every change.
//! Whatever the input, they return a value or an error, never panic, and a valid message
//! survives the round trip.

use dcwatt_common::protocol::{
    compact, decode, parse_node_topic, readings_topic, status_topic, validate_id, Kind, Name,
    Point, Quality, Reading, ReadingsMessage, StatusMessage, TopicKind, MAX_PAYLOAD_BYTES,
};
use proptest::prelude::*;

fn valid_message(seq: u64, values: Vec<f64>) -> ReadingsMessage {
    ReadingsMessage {
        v: 1,
        site: "dc1".into(),
        node: "h-01".into(),
        seq,
        sent_ms: 1_800_000_000_000,
        readings: values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                Reading::gauge("power_w", v, 1_800_000_000_000 + i as i64).at(Point::ItInput)
            })
            .collect(),
    }
}

/// Any reading the protocol can carry, every optional field set or not.
fn any_reading() -> impl Strategy<Value = Reading> {
    let id = "[a-z0-9_]{1,30}";
    (
        (
            id,
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            any::<i64>(),
            any::<bool>(),
        ),
        (
            proptest::option::of(0usize..9),
            proptest::option::of(id),
            proptest::option::of(id),
            any::<bool>(),
        ),
        (
            proptest::option::of(id),
            proptest::option::of(id),
            proptest::option::of(any::<u64>()),
            proptest::option::of(0.0f64..1e300),
        ),
    )
        .prop_map(
            |(
                (metric, value, ts, counter),
                (point, source, component, estimated),
                (rack, zone, avg_ms, wraps_at),
            )| {
                let mut r = Reading::gauge(&metric, value, ts);
                r.kind = if counter { Kind::Counter } else { Kind::Gauge };
                r.point = point.map(|i| Point::ALL[i]);
                r.source = source.map(|s| Name::new(&s));
                if let Some(c) = component {
                    r.component = Name::new(&c);
                }
                r.quality = if estimated {
                    Quality::Estimated
                } else {
                    Quality::Measured
                };
                (r.rack, r.zone, r.avg_ms, r.wraps_at) = (rack, zone, avg_ms, wraps_at);
                r
            },
        )
}

/// A byte-level mutation of a payload.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
}

fn apply(mut p: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if p.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, x) => {
                let i = i % p.len();
                p[i] ^= x | 1;
            }
            Mutation::Truncate(n) => {
                let n = n % p.len();
                p.truncate(n);
            }
            Mutation::Insert(i, bytes) => {
                let i = i % (p.len() + 1);
                p.splice(i..i, bytes.iter().copied());
            }
            Mutation::Duplicate(a, len) => {
                let a = a % p.len();
                let end = (a + len).min(p.len());
                let dup = p[a..end].to_vec();
                p.splice(a..a, dup);
            }
        }
    }
    p
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(a, l)| Mutation::Duplicate(a, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode::<ReadingsMessage>(&bytes);
        let _ = decode::<StatusMessage>(&bytes);
    }

    #[test]
    fn mutated_payloads_never_panic_and_errors_have_a_reason(
        seq in any::<u64>(),
        values in proptest::collection::vec(-1e6f64..1e6, 0..20),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let good = serde_json::to_vec(&valid_message(seq, values)).expect("json");
        let bad = apply(good, &muts);
        if let Err(e) = decode::<ReadingsMessage>(&bad) {
            prop_assert!(!e.reason().is_empty());
        }
    }

    #[test]
    fn valid_messages_survive_the_round_trip(
        seq in any::<u64>(),
        values in proptest::collection::vec(-1e9f64..1e9, 0..50),
    ) {
        let m = valid_message(seq, values);
        let bytes = serde_json::to_vec(&m).expect("json");
        prop_assert!(bytes.len() <= MAX_PAYLOAD_BYTES);
        prop_assert_eq!(decode::<ReadingsMessage>(&bytes).expect("valid"), m);
    }

    #[test]
    fn any_batch_survives_the_compact_round_trip(
        seq in any::<u64>(),
        sent_ms in any::<i64>(),
        readings in proptest::collection::vec(any_reading(), 0..20),
    ) {
        let m = ReadingsMessage { v: 1, site: "dc1".into(), node: "h-01".into(), seq, sent_ms, readings };
        let bytes = compact::encode(&m);
        prop_assert_eq!(decode::<ReadingsMessage>(&bytes).expect("valid"), m);
    }

    #[test]
    fn mutated_compact_payloads_never_panic_and_errors_have_a_reason(
        readings in proptest::collection::vec(any_reading(), 0..10),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let m = ReadingsMessage { v: 1, site: "dc1".into(), node: "h-01".into(), seq: 1, sent_ms: 1, readings };
        let bad = apply(compact::encode(&m), &muts);
        if let Err(e) = decode::<ReadingsMessage>(&bad) {
            prop_assert!(!e.reason().is_empty());
        }
        let _ = decode::<StatusMessage>(&bad);
    }

    #[test]
    fn random_bytes_after_an_array_head_never_panic_the_decoder(
        first in 0x80u8..0xA0,
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let bytes = [&[first][..], &rest].concat();
        prop_assert!(decode::<ReadingsMessage>(&bytes).is_err() || first != 0x9F);
    }

    #[test]
    fn any_topic_parses_or_is_refused_and_a_parsed_one_is_valid(topic in ".{0,200}") {
        if let Ok(t) = parse_node_topic(&topic) {
            prop_assert!(validate_id(t.site).is_ok() && validate_id(t.node).is_ok());
            let again = match t.kind {
                TopicKind::Readings => readings_topic(t.site, t.node),
                TopicKind::Status => status_topic(t.site, t.node),
            };
            prop_assert_eq!(again, topic);
        }
    }

    #[test]
    fn topics_built_from_valid_ids_parse_back(
        // Valid ids: the pattern, other than the path segments `.` and `..`.
        site in "[A-Za-z0-9_.-]{1,64}".prop_filter("not . or ..", |s| s != "." && s != ".."),
        node in "[A-Za-z0-9_.-]{1,64}".prop_filter("not . or ..", |s| s != "." && s != ".."),
    ) {
        let t = readings_topic(&site, &node);
        let parsed = parse_node_topic(&t).expect("valid ids");
        prop_assert_eq!((parsed.site, parsed.node, parsed.kind), (site.as_str(), node.as_str(), TopicKind::Readings));
    }

    #[test]
    fn topic_like_strings_near_the_shape_never_panic(
        levels in proptest::collection::vec("[a-z0-9/+#_. \\-]{0,70}|\\PC{0,8}", 0..8),
    ) {
        let topic = format!("dcwatt/v1/{}", levels.join("/"));
        let _ = parse_node_topic(&topic);
    }
}
