//! The interactive contacts app: a list to search, add, edit and delete
//! contacts, with the sync state always in view and open conflicts shown
//! side by side for the user to choose.
//!
//! The app reads and writes its own SQLite connection and never waits on
//! the network: the background agent syncs on its own threads, and the
//! screen reads its status from a channel. The list is read again only
//! when the file changed (`PRAGMA data_version`), whoever changed it.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState};
use ratatui::{DefaultTerminal, Frame};
use rowsync_client::{new_key, Agent, AgentOptions, AgentStatus, OpenConflict, Replica, Resolution, Side, State};
use rusqlite::{params, Connection};

/// One contact as listed.
struct Contact {
    id: String,
    name: String,
    email: String,
    phone: String,
}

/// The form for adding or editing a contact.
struct Form {
    /// `None` when adding.
    id: Option<String>,
    /// Name, email, phone.
    fields: [String; 3],
    focus: usize,
}

enum Mode {
    List,
    Search,
    Form(Form),
    ConfirmDelete(String),
    Conflicts { open: Vec<OpenConflict>, selected: usize },
}

struct App<'a> {
    db: &'a Path,
    conn: Connection,
    agent: Agent,
    updates: Receiver<AgentStatus>,
    status: AgentStatus,
    contacts: Vec<Contact>,
    table: TableState,
    search: String,
    mode: Mode,
    data_version: Option<i64>,
    message: String,
    quit: bool,
}

pub fn run(db: &Path) -> anyhow::Result<()> {
    let conn = crate::app(db)?;
    let agent = Agent::start(db, AgentOptions::default()).with_context(|| format!("start syncing {}", db.display()))?;
    let updates = agent.subscribe();
    let status = agent.status();
    let mut app = App {
        db,
        conn,
        agent,
        updates,
        status,
        contacts: Vec::new(),
        table: TableState::default().with_selected(Some(0)),
        search: String::new(),
        mode: Mode::List,
        data_version: None,
        message: String::new(),
        quit: false,
    };
    let mut terminal = ratatui::init();
    let result = app.main_loop(&mut terminal);
    ratatui::restore();
    let stopped = app.agent.stop();
    result.and(stopped.map_err(Into::into))
}

impl App<'_> {
    fn main_loop(&mut self, terminal: &mut DefaultTerminal) -> anyhow::Result<()> {
        while !self.quit {
            if let Some(status) = self.updates.try_iter().last() {
                self.status = status;
            }
            self.reload_if_changed()?;
            terminal.draw(|frame| self.draw(frame))?;
            if event::poll(Duration::from_millis(100))? {
                if let Event::Key(key) = event::read()? {
                    if key.kind == KeyEventKind::Press {
                        if let Err(error) = self.key(key) {
                            self.message = format!("{error:#}");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the list again when the file changed (this app, the agent, or
    /// anyone else wrote to it).
    fn reload_if_changed(&mut self) -> anyhow::Result<()> {
        let version: i64 = self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if self.data_version != Some(version) {
            self.data_version = Some(version);
            self.reload()?;
        }
        Ok(())
    }

    fn reload(&mut self) -> anyhow::Result<()> {
        let pattern = format!("%{}%", self.search);
        let mut statement = self.conn.prepare_cached(
            "SELECT id, name, coalesce(email, ''), coalesce(phone, '') FROM contacts \
             WHERE name LIKE ?1 OR email LIKE ?1 OR phone LIKE ?1 ORDER BY name COLLATE NOCASE, id",
        )?;
        self.contacts = statement
            .query_map([pattern], |r| {
                Ok(Contact { id: r.get(0)?, name: r.get(1)?, email: r.get(2)?, phone: r.get(3)? })
            })?
            .collect::<Result<_, _>>()?;
        let last = self.contacts.len().saturating_sub(1);
        self.table.select(Some(self.table.selected().unwrap_or(0).min(last)));
        Ok(())
    }

    fn selected(&self) -> Option<&Contact> {
        self.contacts.get(self.table.selected()?)
    }

    fn key(&mut self, key: KeyEvent) -> anyhow::Result<()> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return Ok(());
        }
        match std::mem::replace(&mut self.mode, Mode::List) {
            Mode::List => self.list_key(key)?,
            Mode::Search => self.search_key(key)?,
            Mode::Form(form) => self.form_key(form, key)?,
            Mode::ConfirmDelete(id) => {
                if key.code == KeyCode::Char('y') {
                    self.conn.execute("DELETE FROM contacts WHERE id = ?", [&id])?;
                    self.message = "deleted".into();
                }
            }
            Mode::Conflicts { open, selected } => self.conflicts_key(open, selected, key)?,
        }
        Ok(())
    }

    fn list_key(&mut self, key: KeyEvent) -> anyhow::Result<()> {
        self.message.clear();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Down | KeyCode::Char('j') => self.table.select_next(),
            KeyCode::Up | KeyCode::Char('k') => self.table.select_previous(),
            KeyCode::Char('/') => self.mode = Mode::Search,
            KeyCode::Char('a') => self.mode = Mode::Form(Form { id: None, fields: Default::default(), focus: 0 }),
            KeyCode::Char('e') | KeyCode::Enter => {
                if let Some(c) = self.selected() {
                    let fields = [c.name.clone(), c.email.clone(), c.phone.clone()];
                    self.mode = Mode::Form(Form { id: Some(c.id.clone()), fields, focus: 0 });
                }
            }
            KeyCode::Char('d') => {
                if let Some(c) = self.selected() {
                    self.mode = Mode::ConfirmDelete(c.id.clone());
                }
            }
            KeyCode::Char('c') => {
                let open = Replica::open(self.db)?.conflicts()?;
                self.mode = Mode::Conflicts { open, selected: 0 };
            }
            KeyCode::Char('s') => {
                self.agent.sync_now();
                self.message = "syncing now".into();
            }
            _ => {}
        }
        Ok(())
    }

    fn search_key(&mut self, key: KeyEvent) -> anyhow::Result<()> {
        match key.code {
            KeyCode::Enter => return Ok(()),
            KeyCode::Esc => self.search.clear(),
            KeyCode::Backspace => {
                self.search.pop();
                self.mode = Mode::Search;
            }
            KeyCode::Char(c) => {
                self.search.push(c);
                self.mode = Mode::Search;
            }
            _ => self.mode = Mode::Search,
        }
        self.reload()
    }

    fn form_key(&mut self, mut form: Form, key: KeyEvent) -> anyhow::Result<()> {
        match key.code {
            KeyCode::Esc => return Ok(()),
            KeyCode::Enter => return self.save(form),
            KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % 3,
            KeyCode::BackTab | KeyCode::Up => form.focus = (form.focus + 2) % 3,
            KeyCode::Backspace => {
                form.fields[form.focus].pop();
            }
            KeyCode::Char(c) => form.fields[form.focus].push(c),
            _ => {}
        }
        self.mode = Mode::Form(form);
        Ok(())
    }

    fn save(&mut self, form: Form) -> anyhow::Result<()> {
        let [name, email, phone] = form.fields.map(|f| f.trim().to_string());
        if name.is_empty() {
            self.message = "a contact needs a name".into();
            self.mode = Mode::Form(Form { fields: [name, email, phone], ..form });
            return Ok(());
        }
        let optional = |s: String| (!s.is_empty()).then_some(s);
        let (email, phone) = (optional(email), optional(phone));
        match form.id {
            Some(id) => {
                self.conn.execute(
                    "UPDATE contacts SET name = ?, email = ?, phone = ? WHERE id = ?",
                    params![name, email, phone, id],
                )?;
                self.message = format!("saved {name}");
            }
            None => {
                self.conn.execute(
                    "INSERT INTO contacts (id, name, email, phone) VALUES (?, ?, ?, ?)",
                    params![new_key(), name, email, phone],
                )?;
                self.message = format!("added {name}");
            }
        }
        Ok(())
    }

    fn conflicts_key(&mut self, open: Vec<OpenConflict>, mut selected: usize, key: KeyEvent) -> anyhow::Result<()> {
        let keep = match key.code {
            KeyCode::Esc | KeyCode::Char('q') => return Ok(()),
            KeyCode::Down | KeyCode::Char('j') => {
                selected = (selected + 1).min(open.len().saturating_sub(1));
                None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                selected = selected.saturating_sub(1);
                None
            }
            KeyCode::Char('l') => Some(Side::Local),
            KeyCode::Char('r') => Some(Side::Remote),
            _ => None,
        };
        let mut open = open;
        if let (Some(side), Some(conflict)) = (keep, open.get(selected)) {
            let replica = Replica::open(self.db)?;
            replica.resolve(&conflict.id, &Resolution::Keep(side))?;
            self.message = format!(
                "kept the {} value of {}",
                if side == Side::Local { "local" } else { "remote" },
                conflict.column
            );
            open = replica.conflicts()?;
            selected = selected.min(open.len().saturating_sub(1));
        }
        self.mode = Mode::Conflicts { open, selected };
        Ok(())
    }

    fn draw(&mut self, frame: &mut Frame) {
        let [top, main, bottom] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
        frame.render_widget(Paragraph::new(self.status_line()), top);
        let rows = self.contacts.iter().map(|c| Row::new([c.name.as_str(), c.email.as_str(), c.phone.as_str()]));
        let title = if self.search.is_empty() {
            format!(" contacts ({}) ", self.contacts.len())
        } else {
            format!(" contacts matching \"{}\" ({}) ", self.search, self.contacts.len())
        };
        let table =
            Table::new(rows, [Constraint::Percentage(35), Constraint::Percentage(40), Constraint::Percentage(25)])
                .header(Row::new(["name", "email", "phone"]).style(Style::new().add_modifier(Modifier::BOLD)))
                .block(Block::default().borders(Borders::ALL).title(title))
                .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        frame.render_stateful_widget(table, main, &mut self.table);
        frame.render_widget(Paragraph::new(self.help_line()), bottom);
        match &self.mode {
            Mode::Form(form) => draw_form(frame, form),
            Mode::Conflicts { open, selected } => draw_conflicts(frame, open, *selected),
            _ => {}
        }
    }

    fn status_line(&self) -> Line<'static> {
        let s = &self.status;
        let (mark, text, color) = match &s.state {
            State::Connecting => ("…", "connecting".to_string(), Color::Yellow),
            State::Syncing { done, remaining } => {
                ("⟳", format!("syncing: {done} done, {remaining} to send"), Color::Yellow)
            }
            State::Idle => {
                let at = s.last_sync_unix_ms.map(time_of_day).unwrap_or_default();
                ("●", format!("online, in sync (last sync {at})"), Color::Green)
            }
            State::Offline { retry_in_ms, .. } => {
                ("○", format!("offline, retrying in {:.0} s", *retry_in_ms as f64 / 1000.0), Color::Red)
            }
            State::ClockAhead { .. } => ("!", "this device's clock runs ahead of the server's".into(), Color::Red),
            State::Failing { reason, .. } => ("!", format!("sync failing: {reason}"), Color::Red),
            State::Stopped => ("■", "stopped".into(), Color::Gray),
        };
        let mut spans = vec![
            Span::styled(format!("{mark} {text}"), Style::new().fg(color)),
            Span::raw(format!(" · {} pending", s.pending_changes)),
        ];
        if s.open_conflicts > 0 {
            spans.push(Span::styled(
                format!(" · {} conflict(s): press c", s.open_conflicts),
                Style::new().fg(Color::Magenta),
            ));
        }
        if s.rejected_changes > 0 {
            spans.push(Span::styled(format!(" · {} refused", s.rejected_changes), Style::new().fg(Color::Red)));
        }
        Line::from(spans)
    }

    fn help_line(&self) -> Line<'static> {
        let text = match &self.mode {
            Mode::Search => format!("search: {}▏ (Enter keeps it, Esc clears)", self.search),
            Mode::ConfirmDelete(_) => "delete this contact? y / n".into(),
            Mode::Form(_) => "Tab next field · Enter save · Esc cancel".into(),
            Mode::Conflicts { .. } => "l keep local · r keep remote · ↑↓ choose · Esc back".into(),
            Mode::List if !self.message.is_empty() => self.message.clone(),
            Mode::List => "a add · e edit · d delete · / search · c conflicts · s sync now · q quit".into(),
        };
        Line::from(text).dim()
    }
}

fn draw_form(frame: &mut Frame, form: &Form) {
    let area = frame.area();
    let width = area.width.min(60);
    let popup = ratatui::layout::Rect { x: (area.width - width) / 2, y: area.height / 3, width, height: 5 };
    let lines: Vec<Line> = ["name", "email", "phone"]
        .iter()
        .zip(&form.fields)
        .enumerate()
        .map(|(i, (label, value))| {
            let cursor = if i == form.focus { "▏" } else { "" };
            let line = Line::from(format!("{label:>6}: {value}{cursor}"));
            if i == form.focus {
                line.bold()
            } else {
                line
            }
        })
        .collect();
    let title = if form.id.is_some() { " edit contact " } else { " new contact " };
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)), popup);
}

fn draw_conflicts(frame: &mut Frame, open: &[OpenConflict], selected: usize) {
    let area = frame.area().inner(ratatui::layout::Margin { horizontal: 2, vertical: 2 });
    frame.render_widget(Clear, area);
    let show = |w: &OpenConflict, local: bool| {
        let side = if local { &w.local } else { &w.remote };
        side.value.to_string()
    };
    let rows = open
        .iter()
        .map(|c| Row::new([Cell::from(c.column.clone()), Cell::from(show(c, true)), Cell::from(show(c, false))]));
    let mut state = TableState::default().with_selected((!open.is_empty()).then_some(selected));
    let title =
        if open.is_empty() { " no open conflicts ".to_string() } else { format!(" {} open conflict(s) ", open.len()) };
    let table = Table::new(rows, [Constraint::Percentage(20), Constraint::Percentage(40), Constraint::Percentage(40)])
        .header(Row::new(["column", "this device", "the other"]).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::default().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(table, area, &mut state);
}

/// `HH:MM:SS UTC` of a time in milliseconds since the Unix epoch.
fn time_of_day(unix_ms: u64) -> String {
    let s = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}
