-- The PostgreSQL shape the integrator example (integrator_sql.py) runs against.
CREATE TABLE cards (
    rec_id         text PRIMARY KEY,
    file_as        text NOT NULL DEFAULT '',
    email1         text NOT NULL DEFAULT '',
    email2         text NOT NULL DEFAULT '',
    account_number text NOT NULL DEFAULT '',
    account_id     text NOT NULL DEFAULT '',
    field1         text NOT NULL DEFAULT '',
    field2         text NOT NULL DEFAULT '',
    field3         text NOT NULL DEFAULT '',
    field4         text NOT NULL DEFAULT '',
    kind           text NOT NULL DEFAULT 'account',   -- account | contact | employee
    parent         text NOT NULL DEFAULT '',          -- a contact's Account
    active         boolean NOT NULL DEFAULT true,
    extra          text NOT NULL DEFAULT '{}'         -- other FLDCRD* fields, as JSON
);
CREATE INDEX cards_email1 ON cards (lower(email1));
CREATE INDEX cards_email2 ON cards (lower(email2));

CREATE TABLE tickets (
    rec_id      text PRIMARY KEY,
    number      text NOT NULL UNIQUE,
    account     text NOT NULL REFERENCES cards (rec_id),
    contact     text NOT NULL DEFAULT '',
    description text NOT NULL,
    status      text NOT NULL DEFAULT '',
    priority    text NOT NULL DEFAULT '',
    kind        text NOT NULL DEFAULT '',
    source      text NOT NULL DEFAULT '',
    manager     text NOT NULL DEFAULT '',
    alert_key   text NOT NULL DEFAULT '',
    closed      boolean NOT NULL DEFAULT false,
    created     timestamptz NOT NULL,
    updated     timestamptz NOT NULL,
    source_key  text UNIQUE,                          -- the message digest: idempotency
    extra       text NOT NULL DEFAULT '{}'
);
CREATE INDEX tickets_open_alerts ON tickets (alert_key) WHERE NOT closed;

CREATE TABLE ticket_history (
    id         bigserial PRIMARY KEY,
    ticket     text NOT NULL REFERENCES tickets (rec_id),
    kind       text NOT NULL,
    text       text NOT NULL,
    subject    text NOT NULL DEFAULT '',
    author     text NOT NULL DEFAULT '',
    message_id text NOT NULL DEFAULT '',
    created    timestamptz NOT NULL
);

CREATE TABLE ticket_documents (
    id           bigserial PRIMARY KEY,
    ticket       text NOT NULL REFERENCES tickets (rec_id),
    filename     text NOT NULL,
    content_type text NOT NULL,
    data         bytea NOT NULL,
    kind         text NOT NULL DEFAULT 'attachment'
);

CREATE TABLE records (      -- the other DataKinds of the XML API (CHARGE, ASSET, ...)
    rec_id text PRIMARY KEY,
    kind   text NOT NULL,
    fields text NOT NULL    -- JSON
);
