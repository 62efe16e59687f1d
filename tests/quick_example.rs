//! The quick example's consumer with two producers writing at once, back to back: it prints
//! every message exactly once.

#[allow(unused_macros)]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_prints_each_message_once_with_two_producers() -> anyhow::Result<()> {
    const EACH: u64 = 40;
    let server = common::start_server().await?;
    let consumer = common::connect(&server, common::Transport::Tcp).await?;
    let a = common::connect(&server, common::Transport::Tcp).await?;
    let b = common::connect(&server, common::Transport::Tcp).await?;
    let mut lines = Vec::new();
    let consuming = odb_examples::consume(&consumer, Some(2 * EACH as usize), |line| {
        lines.push(line.to_string())
    });
    // An interval of zero writes back to back.
    let producing = futures::future::try_join(
        odb_examples::produce(&a, Some(EACH), Duration::ZERO),
        odb_examples::produce(&b, Some(EACH), Duration::ZERO),
    );
    let (consumed, produced) = tokio::time::timeout(common::WAIT * 3, async {
        tokio::join!(consuming, producing)
    })
    .await?;
    consumed?;
    produced?;
    let mut printed: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        let text = line
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        *printed.entry(text.to_string()).or_default() += 1;
    }
    assert_eq!(lines.len(), 2 * EACH as usize);
    for n in 0..EACH {
        assert_eq!(
            printed.get(&format!("message_{n}")),
            Some(&2),
            "message_{n} is printed once per producer: {lines:?}"
        );
    }
    Ok(())
}
