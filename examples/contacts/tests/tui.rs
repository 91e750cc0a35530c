//! The interactive app driven through a real terminal (tmux): add a contact,
//! see it listed, see it arrive in a second instance on another replica,
//! and see the sync state change when the server stops.

use std::process::Command;
use std::time::{Duration, Instant};

use rowsync_testkit::{TestServer, CONTACTS_SCHEMA};
use tempfile::TempDir;

const APP: &str = env!("CARGO_BIN_EXE_contacts");

/// A tmux server of this test's own, killed at the end.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        let socket = format!("rowsync-contacts-{}", std::process::id());
        Tmux { socket }
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs (apt-get install tmux)");
        assert!(output.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `command` in a new 120x30 terminal named `name`.
    fn start(&self, name: &str, command: &str) {
        self.run(&["new-session", "-d", "-s", name, "-x", "120", "-y", "30", command]);
    }

    fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", name])
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        for key in keys {
            self.run(&["send-keys", "-t", name, key]);
        }
    }

    fn text(&self, name: &str, text: &str) {
        self.run(&["send-keys", "-t", name, "-l", text]);
    }

    /// Waits until the screen of `name` shows `needle`.
    fn wait_for(&self, name: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen(name);
            if screen.contains(needle) {
                return screen;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "{name} never showed {needle:?}; it shows:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

#[test]
fn add_a_contact_see_it_on_another_device_and_see_the_server_go_away() {
    let dir = TempDir::new().unwrap();
    let mut server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let (laptop, phone) = (dir.path().join("laptop.db"), dir.path().join("phone.db"));
    for db in [&laptop, &phone] {
        let status = Command::new(APP).arg(db).args(["init", &server.url()]).status().unwrap();
        assert!(status.success());
    }
    let tmux = Tmux::new();
    tmux.start("laptop", &format!("{APP} {}", laptop.display()));
    tmux.start("phone", &format!("{APP} {}", phone.display()));
    tmux.wait_for("laptop", "in sync");
    tmux.wait_for("phone", "in sync");

    tmux.keys("laptop", &["a"]);
    tmux.wait_for("laptop", "new contact");
    tmux.text("laptop", "Ada Lovelace");
    tmux.keys("laptop", &["Tab"]);
    tmux.text("laptop", "ada@example.org");
    tmux.keys("laptop", &["Tab"]);
    tmux.text("laptop", "+44 20 7946 0100");
    tmux.keys("laptop", &["Enter"]);
    let screen = tmux.wait_for("laptop", "contacts (1)");
    assert!(screen.contains("Ada Lovelace") && screen.contains("added Ada Lovelace"), "{screen}");

    // The other device shows it by itself.
    let screen = tmux.wait_for("phone", "Ada Lovelace");
    assert!(screen.contains("ada@example.org") && screen.contains("+44 20 7946 0100"), "{screen}");

    // Search narrows the list.
    tmux.keys("phone", &["/"]);
    tmux.text("phone", "zzz");
    tmux.wait_for("phone", "contacts matching \"zzz\" (0)");
    tmux.keys("phone", &["Escape"]);
    tmux.wait_for("phone", "contacts (1)");

    // The server goes away: the state says so, and the app still works.
    server.stop();
    tmux.wait_for("phone", "offline");
    tmux.keys("phone", &["a"]);
    tmux.text("phone", "Bo");
    tmux.keys("phone", &["Enter"]);
    tmux.wait_for("phone", "contacts (2)");
    tmux.wait_for("phone", "1 pending");

    // It comes back: the offline write reaches the laptop.
    server.restart();
    tmux.wait_for("laptop", "Bo");
    tmux.keys("laptop", &["q"]);
    tmux.keys("phone", &["q"]);
}
