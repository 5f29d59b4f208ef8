//! Daemon-side CPU per event, without Redis: `cargo bench --bench hotpath`.
//! Decoding a stream entry into an envelope and payload, and one handler decision for the
//! busiest handlers. (Redis-side cost is measured by the `throughput` benchmark.)

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use astra_bus::envelope::{ContentType, Envelope, encode_msgpack};
use astra_bus::events::{TradeExecuted, streams};
use astra_bus::handlers::{Event, Registry, testing};

fn trade() -> TradeExecuted {
    TradeExecuted {
        trade_id: "t-123456".into(),
        user_id: "user-42".into(),
        symbol: "BTC".into(),
        side: astra_bus::events::Side::Buy,
        quantity: 0.25,
        price_usd: 64_250.5,
        fee_usd: Some(12.5),
    }
}

fn bench(c: &mut Criterion) {
    let env = Envelope::root(
        "trading.trade_executed",
        1,
        "bench",
        None,
        ContentType::MsgPack,
        encode_msgpack(&trade()),
    );
    let fields = env.to_fields();
    c.bench_function("decode entry + payload (msgpack)", |b| {
        b.iter(|| {
            let e = Envelope::from_fields(black_box(&fields)).unwrap();
            black_box(e.payload::<TradeExecuted>().unwrap())
        })
    });
    let ev = Event {
        stream: streams::TRADE_EXECUTED.into(),
        entry_id: "1-0".into(),
        env,
    };
    let reg = Registry::builtin();
    for name in [
        "gamification.xp_processing",
        "analytics.metrics_collection",
        "analytics.audit_trail",
        "trading.internal_processing",
    ] {
        let handler = reg
            .build(&testing::group(
                name,
                name,
                &[
                    streams::XP_AWARDED,
                    streams::LEVEL_UP,
                    streams::POSITION_UPDATED,
                ],
                "",
            ))
            .unwrap();
        c.bench_function(&format!("{name}: first step"), |b| {
            b.iter(|| black_box(handler.step(black_box(&ev), &[]).unwrap()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
