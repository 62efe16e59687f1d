//! The switch to a new database, step by step against two in-memory servers whose ids differ.

use super::*;
use crate::transaction::{Finished, Transaction};
use crate::view::{Snapshot, View};
use odb_server::sim::{SimConn, SimServer};
use odb_server::ServerConfig;

#[crate::schema(name = "switching")]
mod model {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Item {
        #[index]
        pub tag: String,
    }
}

/// Defined first on the second server, so that the ids of `Item` differ there.
#[crate::schema(name = "switching_noise")]
mod noise {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Noise {
        pub n: i64,
    }
}

use model::Item;

const TOKEN: &str = "switch-token";

struct Link {
    core: ClientCore,
    conn: SimConn,
    now: Instant,
}

impl Link {
    fn connect(server: &mut SimServer) -> Link {
        let now = Instant::now();
        let config = CoreConfig {
            token: TOKEN.into(),
            name: "switch".into(),
            max_frame: odb_wire::DEFAULT_MAX_FRAME,
            policy: ReconnectPolicy::default(),
            urls: 1,
            retain_history: 0,
            seed: 3,
        };
        let mut core = ClientCore::new(config, now);
        assert!(matches!(core.poll_dial(now), Dial::Now(0)));
        let conn = server.connect();
        core.on_connected(now);
        let mut link = Link { core, conn, now };
        link.run(server);
        assert!(link.core.is_up());
        link
    }

    /// Cuts the connection and, a minute later, dials `server`: the hello is queued.
    fn reconnect_to(&mut self, server: &mut SimServer, why: &str) {
        self.core.on_disconnected(why.into(), self.now);
        self.now += Duration::from_secs(60);
        assert!(matches!(self.core.poll_dial(self.now), Dial::Now(0)));
        self.conn = server.connect();
        self.core.on_connected(self.now);
    }

    /// Delivers the hello and the server's welcome, and nothing else.
    fn welcomed_by(&mut self, server: &mut SimServer) {
        while let Some(frame) = self.core.poll_transmit() {
            server.send_frame(&self.conn, frame);
        }
        let welcome = server.recv(&self.conn).expect("welcomed");
        assert!(matches!(welcome, ServerMessage::Welcome { .. }));
        self.core.on_message(welcome, self.now);
    }

    /// Moves frames both ways until neither side has anything more.
    fn run(&mut self, server: &mut SimServer) {
        while self.step(server) {}
    }

    /// Moves what is ready once in each direction; says whether anything moved.
    fn step(&mut self, server: &mut SimServer) -> bool {
        let mut moved = false;
        while let Some(frame) = self.core.poll_transmit() {
            server.send_frame(&self.conn, frame);
            moved = true;
        }
        if let Some(message) = server.recv(&self.conn) {
            self.core.on_message(message, self.now);
            moved = true;
        }
        moved
    }

    /// Runs until request `id` is answered; returns the answer.
    fn answer(&mut self, server: &mut SimServer, id: RequestId) -> Result<Reply> {
        loop {
            while let Some(event) = self.core.poll_event() {
                if let Event::Answer { id: got, result } = event {
                    if got == id {
                        return result;
                    }
                }
            }
            assert!(self.step(server), "request {id:?} is never answered");
        }
    }

    fn define(&mut self, server: &mut SimServer, schema: &'static Schema) {
        let id = self.core.define_schema(schema).expect("defines");
        self.answer(server, id).expect("the schema is defined");
    }

    fn create(&mut self, server: &mut SimServer, tag: &str) {
        let shared = self.core.shared().clone();
        let mut tx = Transaction::new(&shared);
        Item::create(&mut tx, Item { tag: tag.into() }).expect("creates");
        let origin = tx.origin();
        let Finished::Commit(request) = tx.finish() else {
            panic!("the transaction wrote nothing");
        };
        let id = self.core.commit(request, origin).expect("commits");
        self.answer(server, id).expect("the commit is applied");
    }

    fn tags(&self) -> Result<Vec<String>> {
        let view = View::new(Snapshot::open(self.core.shared()));
        Item::lookup_all(&view)?
            .into_iter()
            .map(|item| item.tag(&view))
            .collect()
    }

    fn item_type(&self) -> TypeId {
        self.core
            .shared()
            .type_info(<Item as crate::Object>::type_def())
            .expect("the type is known")
            .type_id
    }
}

#[test]
fn a_new_database_replaces_registry_and_replica_in_one_step() {
    let mut first = SimServer::new(ServerConfig::new(TOKEN), None).expect("starts");
    let mut client = Link::connect(&mut first);
    client.define(&mut first, model::schema());
    let id = client
        .core
        .subscribe(&[Target::Type(TypeKey(<Item as crate::Object>::type_def()))])
        .expect("subscribes");
    client.answer(&mut first, id).expect("subscribed");
    client.create(&mut first, "old");
    assert_eq!(client.tags().expect("reads"), ["old"]);
    let old_type = client.item_type();

    // Another server, whose database defined other types first.
    let mut second = SimServer::new(ServerConfig::new(TOKEN), None).expect("starts");
    let mut other = Link::connect(&mut second);
    other.define(&mut second, noise::schema());
    other.define(&mut second, model::schema());
    other.create(&mut second, "new");
    assert_ne!(
        other.item_type(),
        old_type,
        "the ids differ between the two"
    );

    // The client moves over; it is welcomed and nothing else yet.
    client.reconnect_to(&mut second, "cut");
    client.welcomed_by(&mut second);

    // Mid-switch: still reconnecting, the old database readable as it was, commits refused.
    assert!(matches!(
        client.core.status(),
        ConnectionStatus::Reconnecting { .. }
    ));
    assert_eq!(client.tags().expect("reads the old state"), ["old"]);
    assert_eq!(client.item_type(), old_type);
    let shared = client.core.shared().clone();
    let opened_before = View::new(Snapshot::open(&shared));
    let mut tx = Transaction::new(&shared);
    Item::create(&mut tx, Item { tag: "lost".into() }).expect("creates locally");
    let origin = tx.origin();
    let Finished::Commit(request) = tx.finish() else {
        panic!("the transaction wrote nothing");
    };
    let refused = client.core.commit(request, origin).expect("answered");
    assert!(matches!(
        client.answer(&mut second, refused),
        Err(Error::CommitNotApplied { .. })
    ));

    // The rest of the switch: schemas defined again, the restore's data, then one step.
    client.run(&mut second);
    assert_eq!(client.core.status(), ConnectionStatus::Connected);
    assert_eq!(client.item_type(), other.item_type());
    assert_eq!(client.tags().expect("reads the new state"), ["new"]);
    assert!(matches!(
        Item::lookup_all(&opened_before),
        Err(Error::DatabaseReplaced)
    ));
    drop(opened_before);

    // A commit made from before the switch is refused; a fresh one goes through.
    let refused = client.core.commit(
        CommitRequest::default(),
        Origin {
            ids_link: None,
            generation: 0,
        },
    );
    let refused = refused.expect("answered");
    assert!(matches!(
        client.answer(&mut second, refused),
        Err(Error::CommitNotApplied { .. })
    ));
    client.create(&mut second, "mine");
    other.run(&mut second);
    let mut seen = client.tags().expect("reads");
    seen.sort();
    assert_eq!(seen, ["mine", "new"]);
}

#[test]
fn a_switch_cut_short_leaves_the_old_database_as_it_was() {
    let mut first = SimServer::new(ServerConfig::new(TOKEN), None).expect("starts");
    let mut client = Link::connect(&mut first);
    client.define(&mut first, model::schema());
    // Not subscribed: the object stays visible as the client's own creation, which a resume
    // restores from the id blocks the session was granted.
    client.create(&mut first, "mine");
    assert_eq!(client.tags().expect("reads"), ["mine"]);

    let mut second = SimServer::new(ServerConfig::new(TOKEN), None).expect("starts");
    client.reconnect_to(&mut second, "cut");
    client.welcomed_by(&mut second);
    assert!(matches!(
        client.core.status(),
        ConnectionStatus::Reconnecting { .. }
    ));

    // Cut before the new database's data arrived; the next connection finds the old one.
    client.reconnect_to(&mut first, "cut again");
    client.run(&mut first);
    assert_eq!(client.core.status(), ConnectionStatus::Connected);
    assert_eq!(
        client.tags().expect("reads the old database"),
        ["mine"],
        "the resume still names the blocks the old database granted"
    );
    client.create(&mut first, "more");
    let mut seen = client.tags().expect("reads");
    seen.sort();
    assert_eq!(seen, ["mine", "more"]);
}
