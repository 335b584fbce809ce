//! Each construct evaluated against hand-built requests, including the corners where the
//! language differs from Kea and dhcpd (absent values, out-of-range substrings).

use super::*;
use crate::wire::layout::{
    CHADDR, CIADDR, FILE, GIADDR, HLEN, HTYPE, MAGIC, MAGIC_COOKIE, OPTIONS, SNAME,
};

const MAC: [u8; 6] = [0x00, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e];

/// A DHCPDISCOVER from MAC, relayed by 192.0.2.1, with `options` after option 53.
fn request(options: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; OPTIONS];
    b[0] = 1;
    b[HTYPE] = 1;
    b[HLEN] = 6;
    b[CIADDR..CIADDR + 4].copy_from_slice(&[10, 0, 0, 9]);
    b[GIADDR..GIADDR + 4].copy_from_slice(&[192, 0, 2, 1]);
    b[CHADDR..CHADDR + 6].copy_from_slice(&MAC);
    b[MAGIC..OPTIONS].copy_from_slice(&MAGIC_COOKIE);
    b.extend_from_slice(&[53, 1, 1]);
    b.extend_from_slice(options);
    b.push(255);
    b
}

const CLASSES: [&str; 2] = ["cable", "fiber"];

fn class(name: &str) -> Option<u16> {
    CLASSES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u16::try_from(i).ok())
}

/// Whether `src` holds for the request `bytes`, which is a member of "fiber" only.
fn holds(bytes: &[u8], src: &str) -> bool {
    let req = Request::parse(bytes).unwrap();
    let test = Test::parse(src, &mut class).unwrap_or_else(|e| panic!("{src}: {e}"));
    test.eval(&Packet::new(&req), &|c| c == 1)
}

fn value(bytes: &[u8], src: &str) -> Option<Vec<u8>> {
    let req = Request::parse(bytes).unwrap();
    let v = Value::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    v.eval(&Packet::new(&req)).map(<[u8]>::to_vec)
}

#[test]
fn header_fields() {
    let b = request(&[]);
    assert_eq!(value(&b, "pkt4.mac").unwrap(), MAC);
    assert_eq!(value(&b, "pkt4.oui").unwrap(), MAC[..3]);
    assert_eq!(value(&b, "pkt4.hlen").unwrap(), [6]);
    assert_eq!(value(&b, "pkt4.htype").unwrap(), [1]);
    assert_eq!(value(&b, "pkt4.giaddr").unwrap(), [192, 0, 2, 1]);
    assert_eq!(value(&b, "pkt4.ciaddr").unwrap(), [10, 0, 0, 9]);
    assert_eq!(value(&b, "pkt4.msgtype").unwrap(), [1]);
    assert!(holds(&b, "pkt4.mac == 00:1a:2b:3c:4d:5e"));
    assert!(holds(
        &b,
        "pkt4.oui == 0:1a:2b and pkt4.giaddr == 192.0.2.1"
    ));
    assert!(holds(&b, "pkt4.msgtype == 0x01 and pkt4.hlen == 0x06"));
}

#[test]
fn a_short_hardware_address_has_no_oui() {
    let mut b = request(&[]);
    b[HLEN] = 2;
    assert_eq!(value(&b, "pkt4.mac").unwrap(), MAC[..2]);
    assert_eq!(value(&b, "pkt4.oui"), None);
    assert!(!holds(&b, "pkt4.oui == pkt4.oui"));
    b[HLEN] = 0;
    assert_eq!(value(&b, "pkt4.mac").unwrap(), []);
    assert!(holds(&b, "pkt4.mac == ''"));
}

#[test]
fn options_read_their_first_instance_across_overloaded_fields() {
    let mut b = request(&[52, 1, 3, 60, 3, b'a', b'b', b'c', 0, 0, 60, 1, b'z', 12, 0]);
    b[FILE..FILE + 5].copy_from_slice(&[77, 3, b'f', b'i', b'l']);
    b[FILE + 5] = 255;
    b[SNAME..SNAME + 4].copy_from_slice(&[77, 1, b'x', 43]);
    b[SNAME + 4] = 1;
    b[SNAME + 5] = 9;
    assert_eq!(value(&b, "option[60]").unwrap(), b"abc");
    assert_eq!(value(&b, "option[77].text").unwrap(), b"fil");
    assert_eq!(value(&b, "option[43].hex").unwrap(), [9]);
    assert_eq!(value(&b, "option[12]").unwrap(), []);
    assert_eq!(value(&b, "option[61]"), None);
    assert!(holds(&b, "option[12].exists and option[12] == ''"));
    assert!(holds(
        &b,
        "option[60] == 'abc' and option[60].text == 0x616263"
    ));
    assert!(!holds(&b, "option[61].exists"));
}

#[test]
fn an_absent_value_fails_every_comparison_but_not_equal() {
    let b = request(&[]);
    for op in ["==", "starts-with", "ends-with", "contains"] {
        assert!(!holds(&b, &format!("option[60] {op} ''")), "{op}");
        assert!(!holds(&b, &format!("'' {op} relay4[1]")), "{op}");
        assert!(!holds(&b, &format!("option[60] {op} option[60]")), "{op}");
    }
    // `!=` is `not ==`: true even when both sides are absent (dhcpd says false there).
    assert!(holds(&b, "option[60] != 'x'"));
    assert!(holds(&b, "option[60] != option[61]"));
    assert!(holds(&b, "option[60] != ''"));
    assert!(holds(&b, "substring(option[60], 0, all) != ''"));
}

#[test]
fn relay_sub_options_read_their_first_instance() {
    let rai = [
        1, 5, b'o', b'l', b't', b'-', b'7', 2, 2, 0xab, 0xcd, 1, 1, b'x', 9, 0,
    ];
    let mut opts = vec![82, rai.len() as u8];
    opts.extend_from_slice(&rai);
    opts.extend_from_slice(&[60, 9]);
    opts.extend_from_slice(b"docsis3.0");
    let b = request(&opts);
    assert_eq!(value(&b, "relay4[1]").unwrap(), b"olt-7");
    assert_eq!(value(&b, "relay4[2].hex").unwrap(), [0xab, 0xcd]);
    assert_eq!(value(&b, "relay4[9]").unwrap(), []);
    assert_eq!(value(&b, "relay4[6]"), None);
    assert!(holds(
        &b,
        "relay4[1] starts-with 'olt-7' and option[60] == 'docsis3.0'"
    ));
    assert!(holds(&b, "relay4[2].exists and not relay4[6].exists"));
    assert!(holds(
        &b,
        "relay4[1].text == 'olt-7' and relay4[2] == ab:cd"
    ));

    // A truncated sub-option ends the walk: what follows it is not there.
    let b = request(&[82, 7, 2, 1, 0xee, 1, 9, b'x', b'y']);
    assert_eq!(value(&b, "relay4[2]").unwrap(), [0xee]);
    assert_eq!(value(&b, "relay4[1]"), None);
    // No option 82 at all.
    assert!(!holds(&request(&[]), "relay4[1].exists"));
}

#[test]
fn substring_gives_the_part_that_exists() {
    let b = request(&[]);
    for (src, want) in [
        ("substring('foobar', 0, 6)", &b"foobar"[..]),
        ("substring('foobar', 3, 3)", b"bar"),
        ("substring('foobar', 3, all)", b"bar"),
        ("substring('foobar', 1, 4)", b"ooba"),
        ("substring('foobar', 4, 100)", b"ar"),
        ("substring('foobar', 10, 2)", b""),
        ("substring('foobar', 6, all)", b""),
        ("substring('foobar', 2, 0)", b""),
        ("substring('foobar', 4294967295, 4294967295)", b""),
        ("substring('foobar', 5, 4294967295)", b"r"),
        ("substring(substring('foobar', 1, all), 1, 2)", b"ob"),
    ] {
        assert_eq!(value(&b, src).unwrap(), want, "{src}");
    }
    assert_eq!(value(&b, "substring(option[60], 0, 1)"), None);
}

#[test]
fn comparisons() {
    let b = request(&[]);
    for (src, want) in [
        ("'abc' == 'abc'", true),
        ("'abc' == 'ab'", false),
        ("'abc' != 'ab'", true),
        ("'abc' != 'abc'", false),
        ("'abc' starts-with 'ab'", true),
        ("'abc' starts-with 'bc'", false),
        ("'abc' starts-with ''", true),
        ("'ab' starts-with 'abc'", false),
        ("'abc' ends-with 'bc'", true),
        ("'abc' ends-with 'ab'", false),
        ("'' ends-with ''", true),
        ("'abc' contains 'b'", true),
        ("'abc' contains 'ac'", false),
        ("'abc' contains ''", true),
        ("'' contains 'a'", false),
        ("'abc' contains 'abcd'", false),
        ("0x616263 == 'abc'", true),
        ("'é' == 0xc3a9", true),
    ] {
        assert_eq!(holds(&b, src), want, "{src}");
    }
}

#[test]
fn logic_and_membership() {
    let b = request(&[]);
    for (src, want) in [
        ("true", true),
        ("false", false),
        ("not false", true),
        ("true and false", false),
        ("false or true", true),
        ("false and false or true", true),
        ("false and (false or true)", false),
        ("not true or true", true),
        ("not (true or true)", false),
        ("member('fiber')", true),
        ("member('cable')", false),
        ("member('fiber') and not member('cable')", true),
    ] {
        assert_eq!(holds(&b, src), want, "{src}");
    }
}

/// No datagram is that long; an index that cannot hold the offset reads the option as
/// absent rather than as some other option's bytes.
#[test]
fn options_beyond_64_kib_read_as_absent() {
    let mut opts = vec![0u8; 70_000];
    opts.extend_from_slice(&[60, 2, b'h', b'i']);
    let b = request(&opts);
    assert_eq!(value(&b, "option[60]"), None);
    let b = request(&[60, 2, b'h', b'i']);
    assert_eq!(value(&b, "option[60]").unwrap(), b"hi");
}

#[test]
fn literals_evaluate_to_their_octets() {
    let b = request(&[]);
    for (src, want) in [
        ("'olt-7'", &b"olt-7"[..]),
        (r"'\'\\'", b"'\\"),
        ("''", b""),
        ("0x4d5346", b"MSF"),
        ("1:2:a", &[1, 2, 10]),
        ("192.0.2.255", &[192, 0, 2, 255]),
    ] {
        assert_eq!(value(&b, src).unwrap(), want, "{src}");
    }
}
