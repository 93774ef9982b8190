//! More cgroups than one map batch holds (256): every one is read and reported.

use std::time::Duration;

use anyhow::Result;
use ballast_tests::{eventually, privileged, wait_line, Agent, TestCgroup};

#[test]
fn three_hundred_cgroups_are_all_reported() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut cgroups = Vec::with_capacity(300);
    for i in 0..300 {
        let mut cgroup = TestCgroup::new(&format!("ballast-scale-{i}"))?;
        let (_, mut out) = cgroup.spawn_load(&["tick", "50"])?;
        wait_line(&mut out, "ready")?;
        cgroups.push(cgroup);
    }
    let agent = Agent::start(&["--interval", "500ms"])?;
    let missing = eventually(Duration::from_secs(15), || {
        let text = agent.get_text("/metrics")?;
        let missing = cgroups
            .iter()
            .filter(|c| {
                !text.contains(&format!(
                    "ballast_container_cpu_seconds_total{{cgroup=\"{}\"",
                    c.path
                ))
            })
            .count();
        Ok((missing == 0).then_some(missing))
    })?;
    assert_eq!(missing, 0);
    agent.stop()?;
    Ok(())
}
