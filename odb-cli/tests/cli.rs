//! The `odb` command against a running server: a schema with odd field shapes is declared
//! with its descriptions, objects are written with the SDK, and the command reads them back
//! decoded, as text and as JSON; the descriptions survive a restart on durable storage and a
//! later declaration without descriptions.

use odb::server::{RunningServer, Server};
use odb::Client;
use odb_cli::{Session, Target};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "cli-test-token";

#[derive(odb::Describe, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Shape {
    Point,
    Circle { radius: f64 },
    Group(Vec<Shape>),
    Tagged(Tag, Option<Box<Shape>>),
}

#[derive(odb::Describe, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Tag {
    Red,
    Named(String),
}

#[derive(odb::Describe, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Line {
    pub sku: String,
    pub qty: u32,
    #[serde(skip)]
    pub cached: u64,
}

/// Has no description: stored as usual, shown as bytes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Secret(pub u16);

#[odb::schema(name = "cli_shop")]
pub mod shop {
    use super::{Line, Secret, Shape};

    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Customer {
        #[index]
        pub name: String,
        pub age: i16,
    }

    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Order {
        #[index]
        pub number: u64,
        pub customer: Option<odb::Ref<Customer>>,
        pub lines: Vec<Line>,
        pub shape: Shape,
        pub pair: (bool, char),
        pub secret: Secret,
    }
}

use shop::{Customer, Order};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_odb")
}

fn odb(server: &RunningServer, args: &[&str]) -> anyhow::Result<String> {
    let url = server
        .url()
        .ok_or_else(|| anyhow::anyhow!("no TCP address"))?;
    let out = Command::new(binary())
        .args(args)
        .env("ODB_URL", url)
        .env("ODB_TOKEN", TOKEN)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "odb {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn odb_json(server: &RunningServer, args: &[&str]) -> anyhow::Result<Json> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    Ok(serde_json::from_str(&odb(server, &all)?)?)
}

fn target(server: &RunningServer) -> Target {
    Target {
        url: server.url().unwrap_or_default(),
        token: TOKEN.into(),
        tls_ca: None,
        timeout: Duration::from_secs(10),
    }
}

async fn start(dir: &Path) -> anyhow::Result<RunningServer> {
    Ok(Server::in_dir(dir)?
        .listen("127.0.0.1:0".parse()?)
        .token(TOKEN)
        .start()
        .await?)
}

/// Declares the schema with its descriptions, as a describing client does.
async fn declare_described(server: &RunningServer) -> anyhow::Result<()> {
    let mut session = Session::connect(&target(server)).await?;
    session
        .define(|id| shop::schema().define_message(id))
        .await?;
    Ok(())
}

/// The next line the command printed, waiting at most 20 s.
async fn next_line(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(20), lines.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the command ended early"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("odb-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_decodes_odd_shapes_through_the_descriptions() -> anyhow::Result<()> {
    let dir = temp_dir("shapes");
    let server = start(&dir).await?;
    declare_described(&server).await?;
    let db = Client::builder(server.url().unwrap_or_default())
        .token(TOKEN)
        .connect()
        .await?;
    let shape = Shape::Tagged(
        Tag::Named("x".into()),
        Some(Box::new(Shape::Group(vec![
            Shape::Point,
            Shape::Circle { radius: 1.5 },
        ]))),
    );
    let (ann, order) = db
        .transaction(|tx| {
            let ann = Customer::create(
                tx,
                Customer {
                    name: "ann".into(),
                    age: -3,
                },
            )?;
            let order = Order::create(
                tx,
                Order {
                    number: 7,
                    customer: Some(ann),
                    lines: vec![
                        Line {
                            sku: "a".into(),
                            qty: 2,
                            cached: 0,
                        },
                        Line {
                            sku: "b".into(),
                            qty: 300,
                            cached: 0,
                        },
                    ],
                    shape: shape.clone(),
                    pair: (true, 'é'),
                    secret: Secret(513),
                },
            )?;
            Ok::<_, odb::Error>((ann, order))
        })
        .await?;

    let schemas = odb_json(&server, &["schemas"])?;
    let shop = schemas
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "cli_shop"))
        .cloned()
        .unwrap_or_default();
    let order_type = &shop["types"][1];
    assert_eq!(order_type["name"], "Order");
    assert_eq!(order_type["count"], 1);
    let types: Vec<&str> = order_type["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["type"].as_str())
        .collect();
    assert_eq!(
        types[..5],
        [
            "u64",
            "Option<Ref<cli_shop.Customer>>",
            "Vec<Line>",
            "Shape",
            "(bool, char)"
        ]
    );
    assert!(types[5].starts_with("opaque"), "{types:?}");

    let shown = odb_json(&server, &["show", &order.id().0.to_string()])?;
    assert_eq!(shown["type"], "cli_shop.Order");
    let fields = &shown["fields"];
    assert_eq!(fields["number"], 7);
    assert_eq!(
        fields["customer"],
        json!({"$ref": "cli_shop.Customer", "id": ann.id().0})
    );
    assert_eq!(
        fields["lines"],
        json!([{"sku": "a", "qty": 2}, {"sku": "b", "qty": 300}])
    );
    assert_eq!(
        fields["shape"],
        json!({"Tagged": [{"Named": "x"}, {"Group": ["Point", {"Circle": {"radius": 1.5}}]}]})
    );
    assert_eq!(fields["pair"], json!([true, "é"]));
    assert_eq!(
        fields["secret"]["$opaque"], "0xfb0102",
        "513 as a bincode varint"
    );
    assert_eq!(shown["indices"]["number"], 7);

    let text = odb(&server, &["ls", "cli_shop.Customer", "--where", "name=ann"])?;
    assert_eq!(
        text.trim(),
        format!("#{} cli_shop.Customer name=\"ann\" age=-3", ann.id().0)
    );
    let none = odb(&server, &["ls", "cli_shop.Customer", "--where", "name=bob"])?;
    assert_eq!(none.trim(), "");
    assert_eq!(odb(&server, &["count", "cli_shop.Customer"])?.trim(), "1");

    let dump = odb_json(&server, &["dump", "cli_shop"])?;
    assert_eq!(dump["types"]["cli_shop.Customer"][0]["fields"]["age"], -3);
    assert_eq!(dump["types"]["cli_shop.Order"][0]["id"], order.id().0);

    let stats = odb_json(&server, &["stats"])?;
    assert!(stats["objects"].as_u64().unwrap_or(0) >= 3, "{stats}");

    // The SDK declared the schema without descriptions when it first wrote; a restart on the
    // same directory keeps them as well.
    drop(db);
    server.shutdown().await;
    let server = start(&dir).await?;
    let shown = odb_json(&server, &["show", &order.id().0.to_string()])?;
    assert_eq!(shown["fields"]["lines"][1]["qty"], 300);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_each_commit_as_it_happens() -> anyhow::Result<()> {
    let dir = temp_dir("tail");
    let server = start(&dir).await?;
    declare_described(&server).await?;
    let db = Client::builder(server.url().unwrap_or_default())
        .token(TOKEN)
        .connect()
        .await?;
    db.transaction(|tx| {
        Customer::create(
            tx,
            Customer {
                name: "first".into(),
                age: 1,
            },
        )
    })
    .await?;
    let mut child = Command::new(binary())
        .args(["--json", "tail", "--count", "2"])
        .env("ODB_URL", server.url().unwrap_or_default())
        .env("ODB_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line comes once the command's subscription is complete: every commit made
    // from then on is in its feed.
    let header: Json = serde_json::from_str(&next_line(&mut lines_rx).await?)?;
    assert!(header["following_after_tid"].as_u64().is_some(), "{header}");
    for name in ["c1", "c2"] {
        db.transaction(|tx| {
            Customer::create(
                tx,
                Customer {
                    name: name.into(),
                    age: 2,
                },
            )
        })
        .await?;
    }
    let lines = vec![
        next_line(&mut lines_rx).await?,
        next_line(&mut lines_rx).await?,
    ];
    assert!(child.wait()?.success());
    let changes: Vec<Json> = lines
        .iter()
        .map(|l| serde_json::from_str::<Json>(l))
        .collect::<Result<_, _>>()?;
    let created: Vec<&Json> = changes
        .iter()
        .flat_map(|c| c["changes"].as_array().into_iter().flatten())
        .filter(|c| c["op"] == "create" && c["type"] == "cli_shop.Customer")
        .collect();
    assert_eq!(created.len(), 2, "{lines:?}");
    assert_eq!(created[0]["fields"]["name"], "c1");
    assert_eq!(created[1]["fields"]["age"], 2);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
