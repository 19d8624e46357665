"""What the tests share that is not a fixture: the checkout's root and one set of test Accounts.

``DIRECTORY`` is what the ``connector_factory`` and ``connector`` fixtures load; a test that
needs another directory builds it from these Accounts, and declares one of its own only when
the test is about that Account's fields.
"""

from __future__ import annotations

from pathlib import Path

from commit_email.model import Account, AccountKind

ROOT = Path(__file__).resolve().parent.parent

# -- the help desk at msp.example and its customers ---------------------------------------------

ACME = Account(rec_id="CRDACME0000000000001", file_as="Acme Corporation", email1="acme.example",
               account_number="ACME-001", account_id="1001")
ACME_BOB = Account(rec_id="CRDACMEBOB0000000002", file_as="Bob Builder",
                   email1="bob@acme-hq.example", kind=AccountKind.CONTACT,
                   parent=ACME.rec_id)
GLOBEX = Account(rec_id="CRDGLOBEX00000000003", file_as="Globex Ltd",
                 email1="it@globex.example", email2="Billing@Globex.example")
INITECH = Account(rec_id="CRDINITECH0000000004", file_as="Initech", email1="shared.example")
UMBRELLA = Account(rec_id="CRDUMBRELLA000000005", file_as="Umbrella", email1="shared.example")
TINA = Account(rec_id="CRDEMPTECH0000000006", file_as="Tina Technician",
               email1="tina@msp.example", kind=AccountKind.EMPLOYEE)
OLD = Account(rec_id="CRDOLD00000000000007", file_as="Gone Ltd", email1="boss@gone.example",
              active=False)
DIRECTORY = (ACME, ACME_BOB, GLOBEX, INITECH, UMBRELLA, TINA, OLD)

# -- the help desk at acme.example (the mail-out and threading tests) ---------------------------

#: a customer known by her own address (not by her domain)
JANE = Account(rec_id="CRD-CUST-1", file_as="Customer Ltd", email1="jane@customer.example")
#: a technician of the help desk
TECH = Account(rec_id="CRD-ACME-EMPL-000001", file_as="Tom Tech", email1="tom@acme.example",
               kind=AccountKind.EMPLOYEE)
#: a technician who has left (an inactive employee)
FORMER = Account(rec_id="CRD-ACME-EMPL-000002", file_as="Fay Former",
                 email1="fay@acme.example", kind=AccountKind.EMPLOYEE, active=False)
