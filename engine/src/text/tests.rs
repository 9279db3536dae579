use super::*;

fn ts(s: &str) -> i64 {
    parse_timestamp_micros(s).unwrap()
}

#[test]
fn renders_scalars_like_kuzu() {
    assert_eq!(render(&Value::Null), "");
    assert_eq!(render(&Value::Bool(true)), "True");
    assert_eq!(render(&Value::Bool(false)), "False");
    assert_eq!(render(&Value::Int8(-5)), "-5");
    assert_eq!(render(&Value::UInt64(u64::MAX)), "18446744073709551615");
    assert_eq!(
        render(&Value::Int128(-1844674407370955161511)),
        "-1844674407370955161511"
    );
    assert_eq!(render(&Value::Double(5.0)), "5.0");
    assert_eq!(render(&Value::Double(1.731)), "1.731");
    assert_eq!(render(&Value::Float(0.1)), "0.1");
    assert_eq!(render(&Value::String("a b".into())), "a b");
    assert_eq!(
        render(&Value::Decimal {
            mantissa: 12345,
            scale: 2
        }),
        "123.45"
    );
    assert_eq!(
        render(&Value::Decimal {
            mantissa: -5,
            scale: 3
        }),
        "-0.005"
    );
    assert_eq!(
        render(&Value::Decimal {
            mantissa: 7,
            scale: 0
        }),
        "7"
    );
}

#[test]
fn renders_temporal_values() {
    assert_eq!(render(&Value::Date(0)), "1970-01-01");
    assert_eq!(render(&Value::Date(-25567)), "1900-01-01");
    assert_eq!(
        render(&Value::Timestamp(ts("2011-08-20 11:25:30"))),
        "2011-08-20 11:25:30"
    );
    assert_eq!(
        render(&Value::Timestamp(ts("1972-07-31 13:22:30.678559"))),
        "1972-07-31 13:22:30.678559"
    );
    assert_eq!(
        render(&Value::Timestamp(ts("2007-02-12 12:11:42.123"))),
        "2007-02-12 12:11:42.123"
    );
    assert_eq!(
        render(&Value::TimestampTz(ts("2011-08-20 11:25:30"))),
        "2011-08-20 11:25:30+00"
    );
    assert_eq!(
        render(&Value::TimestampNs(1_000_000_123)),
        "1970-01-01 00:00:01.000000123"
    );
    assert_eq!(render(&Value::TimestampMs(-1)), "1969-12-31 23:59:59.999");
    assert_eq!(render(&Value::TimestampSec(86_400)), "1970-01-02 00:00:00");
    // Before year 1, as Kuzu prints it.
    assert_eq!(
        render(&Value::Date(days_from_civil(0, 1, 1) as i32)),
        "0001-01-01 (BC)"
    );
}

#[test]
fn renders_intervals_like_kuzu() {
    let iv = |s: &str| {
        let (months, days, micros) = parse_interval(s).unwrap();
        render(&Value::Interval {
            months,
            days,
            micros,
        })
    };
    assert_eq!(
        iv("3 years 2 days 13 hours 2 minutes"),
        "3 years 2 days 13:02:00"
    );
    assert_eq!(
        iv("10 years 5 months 13 hours 24 us"),
        "10 years 5 months 13:00:00.000024"
    );
    assert_eq!(iv("20 years 30 days 48 hours"), "20 years 30 days 48:00:00");
    assert_eq!(iv("10 days"), "10 days");
    assert_eq!(iv("1 year"), "1 year");
    assert_eq!(iv("1 day"), "1 day");
    assert_eq!(iv("2 months"), "2 months");
    assert_eq!(iv("0 days"), "00:00:00");
    assert_eq!(render_interval(0, -1, 0), "-1 days");
    assert_eq!(
        render_interval(-14, 0, -3_600_500_000),
        "-1 years -2 months -01:00:00.5"
    );
    assert_eq!(iv("480us"), "00:00:00.00048");
    assert_eq!(iv("28 minutes 30 milliseconds"), "00:28:00.03");
    assert_eq!(iv("30 hours 40 days"), "40 days 30:00:00");
}

#[test]
fn renders_uuid_blob_and_nested() {
    let u = parse_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11").unwrap();
    assert_eq!(
        render(&Value::Uuid(u)),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    assert_eq!(
        render(&Value::Blob(vec![0xAA, b'a', b'\\', 0x0B])),
        "\\xAAa\\x5C\\x0B"
    );
    let list = Value::List(vec![Value::Int64(1), Value::Null, Value::Int64(3)]);
    assert_eq!(render(&list), "[1,,3]");
    let st = Value::Struct(vec![
        ("a".into(), Value::Int64(1)),
        ("b".into(), Value::String("x".into())),
    ]);
    assert_eq!(render(&st), "{a: 1, b: x}");
    let map = Value::Map(vec![
        (Value::String("k".into()), Value::String("v".into())),
        (Value::String("k2".into()), Value::String("v2".into())),
    ]);
    assert_eq!(render(&map), "{k=v, k2=v2}");
    let un = Value::Union {
        tag: "note".into(),
        value: Box::new(Value::String("hi".into())),
    };
    assert_eq!(render(&un), "hi");
    assert_eq!(render(&Value::List(vec![])), "[]");
}

#[test]
fn parses_dates() {
    assert_eq!(parse_date("1970-01-01"), Ok(0));
    assert_eq!(parse_date("1900-01-01"), Ok(-25567));
    assert_eq!(parse_date("2000-02-29"), Ok(11016));
    assert_eq!(parse_date(" 2021-06-30 "), Ok(18808));
    assert_eq!(parse_date("2021/06/30"), Ok(18808));
    let e = parse_date("2021-02-30").unwrap_err();
    assert!(e.contains("2021-02-30"), "{e}");
    assert!(parse_date("2021-13-01").unwrap_err().contains("month 13"));
    assert!(parse_date("hello").unwrap_err().contains("hello"));
    assert!(parse_date("2021-01-01x").is_err());
    assert!(parse_date("").is_err());
}

#[test]
fn parses_timestamps_with_zones() {
    let base = ts("2011-08-20 11:25:30");
    assert_eq!(ts("2011-08-20T11:25:30"), base);
    assert_eq!(ts("2011-08-20 11:25:30Z"), base);
    assert_eq!(ts("2011-08-20 11:25:30Z+00:00"), base);
    assert_eq!(ts("2011-08-20 11:25:30+00"), base);
    assert_eq!(ts("2011-08-20 13:25:30+02:00"), base);
    assert_eq!(ts("2011-08-20 13:25:30+0200"), base);
    assert_eq!(ts("2011-08-20 09:25:30-02"), base);
    assert_eq!(ts("2011-08-20"), ts("2011-08-20 00:00:00"));
    assert_eq!(ts("2011-08-20 11:25"), base - 30_000_000);
    // tinysnb's Bob: 13:25:30.000526 at -02:00 is 15:25:30.000526 UTC.
    assert_eq!(
        ts("2008-11-03 13:25:30.000526-02:00"),
        ts("2008-11-03 15:25:30.000526")
    );
    // tinysnb's Greg: Z+06:40.
    assert_eq!(ts("1976-12-23 11:21:42Z+06:40"), ts("1976-12-23 04:41:42"));
    assert_eq!(base, 1_313_839_530_000_000);
    // Fractions: up to nine digits, truncated to micros.
    assert_eq!(ts("2011-08-20 11:25:30.1234567") - base, 123_456);
    assert_eq!(
        parse_timestamp_nanos("2011-08-20 11:25:30.1234567").unwrap(),
        base * 1000 + 123_456_700
    );
    assert_eq!(
        parse_timestamp_millis("2011-08-20 11:25:30.1234567").unwrap(),
        base / 1000 + 123
    );
    assert_eq!(
        parse_timestamp_secs("2011-08-20 11:25:30.9").unwrap(),
        base / 1_000_000
    );
    for bad in [
        "2011-08-20 25:00:00",
        "2011-08-20 11:25:30 UTC",
        "2011-08-20 11:25:30.",
        "2011-08-20 11",
        "x",
    ] {
        let e = parse_timestamp_micros(bad).unwrap_err();
        assert!(e.contains(bad), "{e}");
    }
    assert!(parse_timestamp_nanos("3000-01-01")
        .unwrap_err()
        .contains("out of range"));
}

#[test]
fn parses_intervals() {
    let p = |s: &str| parse_interval(s).unwrap();
    let h = MICROS_PER_HOUR;
    let m = MICROS_PER_MINUTE;
    assert_eq!(
        p("3 years 2 days 13 hours 2 minutes"),
        (36, 2, 13 * h + 2 * m)
    );
    assert_eq!(p("10 years 5 months 13 hours 24 us"), (125, 0, 13 * h + 24));
    assert_eq!(p("20 years 30 days 48 hours"), (240, 30, 48 * h));
    assert_eq!(p("10 days"), (0, 10, 0));
    assert_eq!(p("1 year"), (12, 0, 0));
    assert_eq!(p("2 months"), (2, 0, 0));
    assert_eq!(p("2 weeks"), (0, 14, 0));
    assert_eq!(p("480us"), (0, 0, 480));
    assert_eq!(p("300 milliseconds"), (0, 0, 300_000));
    assert_eq!(
        p("48 hours 24 minutes 11 seconds"),
        (0, 0, 48 * h + 24 * m + 11_000_000)
    );
    assert_eq!(
        p("2 years 4 hours 22 us 34 minutes"),
        (24, 0, 4 * h + 22 + 34 * m)
    );
    assert_eq!(p("1 SECS 1 Mins 1 HOUR"), (0, 0, h + m + 1_000_000));
    assert_eq!(p("1.5 hours"), (0, 0, 90 * m));
    assert_eq!(p("1.5 days"), (0, 1, 12 * h));
    assert_eq!(p("-1 days"), (0, -1, 0));
    assert_eq!(p("00:00:00"), (0, 0, 0));
    assert_eq!(p("3 years 2 days 13:02:00"), (36, 2, 13 * h + 2 * m));
    assert_eq!(
        p("10 years 5 months 13:00:00.000024"),
        (125, 0, 13 * h + 24)
    );
    assert_eq!(p("-1 years -2 months -01:00:00.5"), (-14, 0, -h - 500_000));
    assert_eq!(p("@ 1 day"), (0, 1, 0));
    for bad in ["", "5", "3 fortnights", "years", "1 day 2", "01:xx"] {
        let e = parse_interval(bad).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
    assert!(parse_interval("3000000000 months").is_err());
}

#[test]
fn parses_uuids() {
    let want = 0xa0eebc99_9c0b_4ef8_bb6d_6bb9bd380a11_u128;
    assert_eq!(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), Ok(want));
    assert_eq!(parse_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), Ok(want));
    assert_eq!(
        parse_uuid("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
        Ok(want)
    );
    assert_eq!(parse_uuid("a0eebc999c0b4ef8bb6d6bb9bd380a11"), Ok(want));
    assert!(parse_uuid("a0eebc99").unwrap_err().contains("a0eebc99"));
    assert!(parse_uuid("g0eebc999c0b4ef8bb6d6bb9bd380a11").is_err());
    assert!(parse_uuid("a0eebc999c0b4ef8bb6d6bb9bd380a1100").is_err());
}

#[test]
fn parses_blobs_and_decimals() {
    assert_eq!(
        parse_blob("\\xAA\\xABinteresting\\x0B").unwrap(),
        [&[0xAA, 0xAB][..], b"interesting", &[0x0B]].concat()
    );
    assert_eq!(parse_blob("NO hex code").unwrap(), b"NO hex code");
    assert!(parse_blob("bad \\q").unwrap_err().contains("bad \\\\q"));
    assert!(parse_blob("bad \\x4").is_err());

    assert_eq!(parse_decimal("123.45", 10, 2), Ok(12345));
    assert_eq!(parse_decimal("-0.005", 10, 3), Ok(-5));
    assert_eq!(parse_decimal("7", 18, 3), Ok(7000));
    assert_eq!(parse_decimal("1.2345", 18, 2), Ok(123));
    assert_eq!(parse_decimal("1.235", 18, 2), Ok(124));
    assert_eq!(parse_decimal("-1.235", 18, 2), Ok(-124));
    assert_eq!(parse_decimal("1.5e2", 18, 0), Ok(150));
    assert_eq!(parse_decimal("0.4", 18, 0), Ok(0));
    assert_eq!(parse_decimal(".5", 18, 1), Ok(5));
    let e = parse_decimal("12345", 4, 0).unwrap_err();
    assert!(e.contains("12345") && e.contains("DECIMAL(4, 0)"), "{e}");
    assert!(parse_decimal("12.x", 4, 0).is_err());
    assert!(parse_decimal("", 4, 0).is_err());
    assert!(parse_decimal("-", 4, 0).is_err());
}

#[test]
fn dates_round_trip() {
    let samples = [
        0,
        1,
        -1,
        59,
        60,
        -25567,
        18808,
        11016,
        2_932_896,
        -719_162,
        -719_528,
        -800_000,
        i32::MAX,
        i32::MIN,
    ];
    for d in samples.into_iter().chain((-800_000..800_000).step_by(997)) {
        let text = render(&Value::Date(d));
        assert_eq!(parse_date(&text), Ok(d), "{text}");
    }
}

#[test]
fn timestamps_round_trip() {
    let samples = [
        0,
        1,
        -1,
        999_999,
        -999_999,
        1_313_839_530_123_456,
        -2_208_988_800_000_000,
        i64::MAX,
        i64::MIN,
        i64::MAX / 3,
        i64::MIN / 7,
    ];
    for v in samples {
        let t = render(&Value::Timestamp(v));
        assert_eq!(parse_timestamp_micros(&t), Ok(v), "{t}");
        let t = render(&Value::TimestampTz(v));
        assert_eq!(parse_timestamp_micros(&t), Ok(v), "{t}");
        let t = render(&Value::TimestampNs(v));
        assert_eq!(parse_timestamp_nanos(&t), Ok(v), "{t}");
        let t = render(&Value::TimestampMs(v));
        assert_eq!(parse_timestamp_millis(&t), Ok(v), "{t}");
        let t = render(&Value::TimestampSec(v / 1000));
        assert_eq!(parse_timestamp_secs(&t), Ok(v / 1000), "{t}");
    }
}

#[test]
fn intervals_round_trip() {
    let samples = [
        (0, 0, 0),
        (36, 2, 13 * MICROS_PER_HOUR + 2 * MICROS_PER_MINUTE),
        (125, 0, 13 * MICROS_PER_HOUR + 24),
        (-14, -3, -1),
        (1, 1, 1),
        (13, -1, 1),
        (-1, 1, -MICROS_PER_DAY * 3 - 5),
        (i32::MAX, i32::MAX, i64::MAX),
        (i32::MIN, i32::MIN, i64::MIN),
        (0, 0, 100_000),
    ];
    for (months, days, micros) in samples {
        let t = render(&Value::Interval {
            months,
            days,
            micros,
        });
        assert_eq!(parse_interval(&t), Ok((months, days, micros)), "{t}");
    }
}

#[test]
fn uuids_blobs_decimals_round_trip() {
    for u in [0, 1, u128::MAX, 0xa0eebc99_9c0b_4ef8_bb6d_6bb9bd380a11] {
        assert_eq!(parse_uuid(&render(&Value::Uuid(u))), Ok(u));
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(parse_blob(&render_blob(&all)), Ok(all));
    for (m, s) in [(0, 0), (12345, 2), (-5, 3), (i128::MAX / 1000, 10), (-1, 0)] {
        assert_eq!(parse_decimal(&render_decimal(m, s), 38, s), Ok(m));
    }
}

#[test]
fn parses_nested_text_from_tinysnb() {
    use DataType as T;
    let transfer = T::Struct(vec![
        ("day".into(), T::Date),
        ("amount".into(), T::List(Box::new(T::Int64))),
    ]);
    let summary = T::Struct(vec![
        ("locations".into(), T::List(Box::new(T::String))),
        ("transfer".into(), transfer),
    ]);
    let v = parse_value(
        "{locations:['toronto','waterloo'], transfer: {day: 2021-01-02, amount: [100, 200]}}",
        &summary,
    )
    .unwrap();
    assert_eq!(
        render(&v),
        "{locations: [toronto,waterloo], transfer: {day: 2021-01-02, amount: [100,200]}}"
    );
    let empty = parse_value("{}", &summary).unwrap();
    assert_eq!(
        empty,
        Value::Struct(vec![
            ("locations".into(), Value::Null),
            ("transfer".into(), Value::Null)
        ])
    );

    let state = T::Struct(vec![
        ("revenue".into(), T::Int16),
        ("location".into(), T::List(Box::new(T::String))),
        (
            "stock".into(),
            T::Struct(vec![
                ("price".into(), T::List(Box::new(T::Int64))),
                ("volume".into(), T::Int64),
            ]),
        ),
    ]);
    let v = parse_value(
        "{revenue: 152, location: [\"vanco,uver north area\"], stock: {'price': [15, 78, 671], 'volume': 432}}",
        &state,
    )
    .unwrap();
    let Value::Struct(fields) = &v else {
        panic!("{v:?}")
    };
    assert_eq!(
        fields[1].1,
        Value::List(vec![Value::String("vanco,uver north area".into())])
    );

    let map = T::Map(Box::new(T::String), Box::new(T::String));
    let v = parse_value("{c=d, e=f, 1=2}", &map).unwrap();
    assert_eq!(render(&v), "{c=d, e=f, 1=2}");
    let audience = T::Map(Box::new(T::String), Box::new(T::Int64));
    let v = parse_value("{audience1= 52,audience53= 42}", &audience).unwrap();
    assert_eq!(render(&v), "{audience1=52, audience53=42}");

    let grades = T::Array(Box::new(T::Int64), 4);
    assert_eq!(
        render(&parse_value("[96,54,86,92]", &grades).unwrap()),
        "[96,54,86,92]"
    );
    let e = parse_value("[1,2]", &grades).unwrap_err();
    assert!(e.contains("[1,2]") && e.contains("INT64[4]"), "{e}");
    let nested = T::List(Box::new(T::List(Box::new(T::Int64))));
    assert_eq!(
        render(&parse_value("[[10,8],[6,7,8]]", &nested).unwrap()),
        "[[10,8],[6,7,8]]"
    );
    let names = T::List(Box::new(T::String));
    assert_eq!(
        parse_value("[Carmen,Fred]", &names).unwrap(),
        Value::List(vec!["Carmen".into(), "Fred".into()])
    );

    let info = T::Union(vec![
        ("price".into(), T::Float),
        ("movein".into(), T::Date),
        ("note".into(), T::String),
    ]);
    let tag = |s: &str| match parse_value(s, &info).unwrap() {
        Value::Union { tag, .. } => tag,
        other => panic!("{other:?}"),
    };
    assert_eq!(tag("3.12"), "price");
    assert_eq!(tag("2023-12-15"), "movein");
    assert_eq!(tag("abcd"), "note");

    assert!(parse_value("[1,2", &names).is_err());
    assert!(parse_value("{nope: 1}", &state)
        .unwrap_err()
        .contains("nope"));
    assert!(parse_value("x", &T::Int64).unwrap_err().contains("INT64"));
    assert!(parse_value("300", &T::Int8).unwrap_err().contains("300"));
    assert_eq!(
        parse_value(" a ", &T::String),
        Ok(Value::String(" a ".into()))
    );
}

#[test]
fn quoted_render_round_trips_nested_strings() {
    use DataType as T;
    let ty = T::Struct(vec![
        ("s".into(), T::List(Box::new(T::String))),
        ("m".into(), T::Map(Box::new(T::String), Box::new(T::Int32))),
        ("d".into(), T::Date),
        ("b".into(), T::Blob),
    ]);
    let v = Value::Struct(vec![
        (
            "s".into(),
            Value::List(vec![
                "plain".into(),
                "a,b".into(),
                "".into(),
                Value::Null,
                "NULL".into(),
                "say \"hi\"\\".into(),
                " padded ".into(),
                "it's".into(),
            ]),
        ),
        (
            "m".into(),
            Value::Map(vec![(Value::String("k=v".into()), Value::Int32(1))]),
        ),
        ("d".into(), Value::Date(18808)),
        ("b".into(), Value::Blob(vec![0, 255, b'x'])),
    ]);
    let text = render_quoted(&v);
    assert_eq!(parse_value(&text, &ty), Ok(v), "{text}");
}
