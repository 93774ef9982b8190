//! Network pressure against ground truth: bytes and packets per cgroup versus the loopback
//! counters of a network namespace only that cgroup uses, and TCP retransmissions under loss
//! injected with nftables between two namespaces, attributed to the sending cgroup only.

use std::{io::BufRead, process::Command, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use ballast_tests::{
    load_bin, privileged, sample_for, settled_value, wait_line, Agent, TestCgroup,
};

/// Loopback counters printed by `ballast-load net`: (rx bytes, rx packets, tx bytes, tx packets).
fn read_lo_line(out: &mut impl BufRead) -> Result<[f64; 4]> {
    let mut line = String::new();
    out.read_line(&mut line)?;
    let fields: Vec<f64> = line
        .strip_prefix("lo ")
        .ok_or_else(|| anyhow!("expected the lo counters, got {line:?}"))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    fields
        .try_into()
        .map_err(|_| anyhow!("four counters expected: {line:?}"))
}

#[test]
fn bytes_and_packets_match_the_namespace_loopback_per_cgroup() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let agent = Agent::start(&["--interval", "500ms", "--rescan-interval", "1s"])?;
    // Two cgroups, different amounts, at the same time: each must get exactly its own.
    let mut big = TestCgroup::new("ballast-net-big")?;
    let mut small = TestCgroup::new("ballast-net-small")?;
    let (_, mut big_out) = big.spawn_load(&["net", "20000000"])?;
    let (_, mut small_out) = small.spawn_load(&["net", "3000000"])?;
    for (cgroup, out) in [(&big, &mut big_out), (&small, &mut small_out)] {
        let [rx_bytes, rx_packets, tx_bytes, tx_packets] = read_lo_line(out)?;
        wait_line(out, "done")?;
        let expected = [
            // Loopback counts IP packets (it strips the Ethernet header before counting), as
            // the cgroup programs see them.
            ("receive_bytes", rx_bytes),
            ("receive_packets", rx_packets),
            ("transmit_bytes", tx_bytes),
            ("transmit_packets", tx_packets),
        ];
        for (what, truth) in expected {
            let family = format!("ballast_container_network_{what}_total");
            let measured = settled_value(&agent, &family, &cgroup.path)?;
            eprintln!(
                "{}: {what} ballast {measured} vs loopback {truth}",
                cgroup.path
            );
            assert!(
                (measured - truth).abs() <= 0.01 * truth,
                "{} {what}: {measured} not within 1 % of {truth}",
                cgroup.path
            );
        }
    }
    agent.stop()?;
    Ok(())
}

/// A named network namespace for the test; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Result<Self> {
        let name = format!("{name}-{}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        Ok(Self(name))
    }

    fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.0, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (installed by `cargo xtask setup`)"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The TCP RetransSegs counter of a namespace.
fn retrans_segs(ns: &Netns) -> Result<f64> {
    let snmp = ns.exec("cat", &["/proc/net/snmp"])?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next(), tcp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Tcp lines in /proc/net/snmp");
    };
    let index = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .ok_or_else(|| anyhow!("no RetransSegs"))?;
    Ok(values
        .split_whitespace()
        .nth(index)
        .ok_or_else(|| anyhow!("short Tcp line"))?
        .parse()?)
}

#[test]
fn retransmits_are_charged_to_the_sending_cgroup() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    // Sender namespace --veth-- receiver namespace, which drops 10 % of incoming data segments.
    let sender_ns = Netns::new("ballast-tx")?;
    let receiver_ns = Netns::new("ballast-rx")?;
    let (a, b) = (
        format!("bta{}", std::process::id() % 100_000),
        format!("btb{}", std::process::id() % 100_000),
    );
    run(
        "ip",
        &[
            "link",
            "add",
            &a,
            "netns",
            &sender_ns.0,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &receiver_ns.0,
        ],
    )?;
    sender_ns.exec("ip", &["addr", "add", "10.231.0.1/24", "dev", &a])?;
    receiver_ns.exec("ip", &["addr", "add", "10.231.0.2/24", "dev", &b])?;
    for (ns, dev) in [(&sender_ns, &a), (&receiver_ns, &b)] {
        ns.exec("ip", &["link", "set", dev, "up"])?;
        ns.exec("ip", &["link", "set", "lo", "up"])?;
    }
    receiver_ns.exec(
        "nft",
        &["add table inet ballast_loss; \
           add chain inet ballast_loss input { type filter hook input priority 0; }; \
           add rule inet ballast_loss input tcp dport 5201 meta length > 100 numgen random mod 100 < 10 drop"],
    )?;

    let agent = Agent::start(&["--interval", "500ms", "--rescan-interval", "1s"])?;
    let load = load_bin()?;
    let load = load.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    let mut receiver = TestCgroup::new("ballast-net-rx")?;
    let (_, mut rx_out) = receiver.spawn(
        "ip".as_ref(),
        &["netns", "exec", &receiver_ns.0, load, "tcpsink", "5201"],
    )?;
    wait_line(&mut rx_out, "ready")?;
    let before = retrans_segs(&sender_ns)?;
    let mut sender = TestCgroup::new("ballast-net-tx")?;
    let (_, mut tx_out) = sender.spawn(
        "ip".as_ref(),
        &[
            "netns",
            "exec",
            &sender_ns.0,
            load,
            "tcpsend",
            "10.231.0.2:5201",
            "8000000",
        ],
    )?;
    wait_line(&mut tx_out, "done")?;
    let truth = retrans_segs(&sender_ns)? - before;
    let family = "ballast_container_tcp_retransmits_total";
    let counted = settled_value(&agent, family, &sender.path)?;
    let receiver_counted = sample_for(&agent.scrape()?, family, &receiver.path, &[]).unwrap_or(0.0);
    eprintln!("retransmits: sender {counted}, receiver {receiver_counted}, RetransSegs {truth}");
    assert!(truth > 0.0, "10 % loss must cause retransmissions");
    assert!(
        counted > 0.0,
        "the sending cgroup's retransmissions are counted"
    );
    // Both count segments of successful retransmissions in the sender's namespace, which only
    // this test's sender uses.
    assert!(
        (counted - truth).abs() <= 0.05 * truth,
        "retransmitted segments {counted} within 5 % of RetransSegs {truth}"
    );
    assert_eq!(
        receiver_counted, 0.0,
        "the receiver sends only ACKs and never retransmits"
    );
    std::thread::sleep(Duration::from_millis(10));
    agent.stop()?;
    Ok(())
}
