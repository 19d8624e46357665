"""Delivery order decides nothing (the rule in docs/reference/automated.md):
whatever order a PROBLEM, its repeat, its RECOVERY and a later PROBLEM arrive in, exactly
one ticket stays open, and it holds the later problem — no ticket for the recovered
episode stays open forever, and a late all-clear never closes the newer problem."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from commit_email.message import Message
from commit_email.model import OutcomeKind
from commit_email.pipeline import Connector
from commit_email.runner import Runner
from commit_email.testing import make_config, make_connector
from tests.alert_fixtures import alert_path, sequence
from tests.automated_fixtures import ACCOUNT_RULES, ACCOUNTS, DATTO_RULE
from tests.dovecot_fixtures import DovecotServer

SEQUENCES = [("nagios", "service"), ("icinga2", "host"), ("monit", "nginx"),
             ("rmm-datto", "cpu")]


def open_tickets_mails(connector: Connector) -> list[set[str]]:
    """For each open ticket, the Message-IDs of the mails filed under it."""
    sink = connector.sink
    return [{h.message_id for h in sink.history(t.rec_id)}
            for t in sink.list_tickets() if not t.closed]


@pytest.mark.parametrize(("folder", "prefix"), SEQUENCES)
def test_every_delivery_order_leaves_only_the_later_problem_open(folder: str,
                                                                 prefix: str) -> None:
    names = sequence(folder, prefix)[:4]
    raws = [alert_path(n).read_bytes() for n in names]
    later_problem_id = Message.from_bytes(raws[3]).message_id
    for order in itertools.permutations(range(4)):
        connector = make_connector(
            make_config(automated={"account": ACCOUNT_RULES, "detection": [DATTO_RULE]}),
            accounts=ACCOUNTS,
        )
        outcomes = [connector.process(raws[i]).kind for i in order]
        assert OutcomeKind.QUARANTINED not in outcomes
        still_open = open_tickets_mails(connector)
        assert len(still_open) == 1, (order, outcomes)
        assert later_problem_id in still_open[0], (order, outcomes)


@pytest.mark.server
def test_alerts_fetched_from_pop3_in_shuffled_order(dovecot: DovecotServer,
                                                     tmp_path: Path) -> None:
    mails = [alert_path(n).read_bytes() for f, p in SEQUENCES for n in sequence(f, p)[:4]]
    random.Random(6).shuffle(mails)
    dovecot.deliver_many(mails)
    config = make_config(
        state_dir=tmp_path / "state",
        pop3={"host": dovecot.host, "port": dovecot.pop3_port, "security": "plain",
              "user": dovecot.user, "password": dovecot.password, "timeout": 5.0},
        automated={"account": ACCOUNT_RULES, "detection": [DATTO_RULE]},
    )
    connector = make_connector(config, accounts=ACCOUNTS)
    assert Runner(config, connector, sleep=lambda s: None).run(once=True) == 0

    outcomes = [r.outcome.kind for r in connector.state.iter_processed()]
    assert len(outcomes) == len(mails)
    assert OutcomeKind.QUARANTINED not in outcomes
    assert len(open_tickets_mails(connector)) == len(SEQUENCES)
    assert dovecot.message_files() == []  # every outcome recorded, so every mail deleted
