//! Fan-out benchmark: N WebSocket subscribers of one chat room, one
//! publisher, all on their own connections to a running gateway.
//!
//! 1. Latency: messages published one at a time (the next after every
//!    subscriber has the previous one); for each, the time from the
//!    publisher's send to its arrival at the *last* subscriber, and to each
//!    single arrival. Reports p50/p99/max.
//! 2. Throughput: the publisher keeps a window of messages in flight (so no
//!    subscriber's queue overflows) for a fixed count; reports published
//!    messages/s, deliveries/s and messages/s per connection.
//!
//! Any subscriber that is closed or misses a message fails the run.
//!
//! With several `--addr` (nodes of one cluster), subscribers are spread
//! over them round robin, the publisher is on the first, and single
//! arrivals are reported apart for the publisher's node and the others
//! (publish -> NATS -> another node -> its subscriber).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// The gateway's plain listener, e.g. 127.0.0.1:8080; once per node of
    /// a cluster.
    #[arg(long, required = true)]
    addr: Vec<String>,
    /// WebSocket path of the chat route (room in the query).
    #[arg(long, default_value = "/chat/ws?room=bench")]
    path: String,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages timed one at a time.
    #[arg(long, default_value_t = 200)]
    latency_messages: usize,
    /// Messages in the throughput phase.
    #[arg(long, default_value_t = 2000)]
    throughput_messages: usize,
    /// Messages in flight during the throughput phase.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// The gateway's process id, to print its RSS with every subscriber connected.
    #[arg(long)]
    gateway_pid: Option<u32>,
}

/// One arrival: which message, when, on which node's subscriber.
type Arrival = (usize, Instant, usize);

async fn connect(args: &Args, node: usize) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let addr = &args.addr[node];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let url = format!("ws://{addr}{}", args.path);
    client_async(url, tcp).await.expect("upgrade").0
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<Arrival>();
    let mut subscribers = Vec::new();
    for index in 0..args.subscribers {
        let node = index % args.addr.len();
        let mut socket = connect(&args, node).await;
        let arrivals = arrivals.clone();
        subscribers.push(tokio::spawn(async move {
            while let Some(frame) = socket.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        let index = text.parse().expect("the bench's own messages");
                        if arrivals.send((index, Instant::now(), node)).is_err() {
                            return;
                        }
                    }
                    Ok(Message::Close(frame)) => panic!("subscriber closed: {frame:?}"),
                    Ok(_) => {}
                    Err(error) => panic!("subscriber failed: {error}"),
                }
            }
        }));
    }
    drop(arrivals);
    if let Some(pid) = args.gateway_pid {
        match wasmgate_loadtests::rss_kib(pid) {
            Ok(rss) => println!(
                "gateway with {} connections: RSS {rss} KiB",
                args.subscribers
            ),
            Err(error) => println!("gateway RSS unknown: {error}"),
        }
    }
    let publisher = connect(&args, 0).await;
    // The publisher is in the room too; it reads its own copies away.
    let (mut send, mut own) = publisher.split();
    tokio::spawn(async move { while own.next().await.is_some() {} });
    let n = args.subscribers;

    // Phase 1: one message at a time.
    let mut last_arrival = Vec::new();
    let mut each_arrival = Vec::new();
    let (mut same_node, mut other_nodes) = (Vec::new(), Vec::new());
    for index in 0..args.latency_messages {
        let sent = Instant::now();
        send.send(Message::text(index.to_string()))
            .await
            .expect("publish");
        let mut count = 0;
        while count < n {
            let (got, at, node) = arrived.recv().await.expect("subscribers alive");
            assert_eq!(got, index, "a message arrived out of turn");
            each_arrival.push(at - sent);
            if node == 0 {
                same_node.push(at - sent);
            } else {
                other_nodes.push(at - sent);
            }
            count += 1;
            if count == n {
                last_arrival.push(at - sent);
            }
        }
    }
    report("publish -> last of N subscribers", &mut last_arrival);
    report("publish -> each delivery", &mut each_arrival);
    if args.addr.len() > 1 {
        report("  on the publisher's node", &mut same_node);
        report("  on the other nodes", &mut other_nodes);
    }

    // Phase 2: a window of messages in flight.
    let base = args.latency_messages;
    let total = args.throughput_messages;
    let mut received = vec![0usize; total];
    let mut complete = 0;
    let mut published = 0;
    let started = Instant::now();
    while complete < total {
        while published < total && published < complete + args.window {
            send.send(Message::text((base + published).to_string()))
                .await
                .expect("publish");
            published += 1;
        }
        let (got, _, _) = arrived.recv().await.expect("subscribers alive");
        let slot = &mut received[got - base];
        *slot += 1;
        if *slot == n {
            complete += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let deliveries = (total * n) as f64;
    println!(
        "throughput: {total} messages to {n} subscribers in {elapsed:.2}s: \
         {:.0} msg/s published = received per connection, {:.0} deliveries/s in all",
        total as f64 / elapsed,
        deliveries / elapsed,
    );
    for subscriber in subscribers {
        subscriber.abort();
    }
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
        samples.len()
    );
}
