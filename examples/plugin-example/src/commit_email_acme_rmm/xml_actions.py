"""A new DataKind for the API by email: ``RMM-DEVICE``, the RMM's device inventory.

The RMM knows customers by their account number, not by Commit's REC ID, so the action
looks the Account up and stores the device as a Commit ASSET record linked to it::

    <DataKind>RMM-DEVICE</DataKind>
    <RecordData>
      <AccountNumber>ACME-001</AccountNumber>
      <DeviceName>ACME-DC01</DeviceName>
      <SerialNumber>SN-4711</SerialNumber>
    </RecordData>
"""

from __future__ import annotations

from commit_email import Context
from commit_email.xml_api import ErrorCode, Transaction, XmlApiError


def add_device(transaction: Transaction, ctx: Context) -> str:
    """Apply one RMM-DEVICE transaction; returns the new ASSET's REC ID.

    Raising XmlApiError refuses the transaction: nothing it wrote is kept, and the sender
    gets the code and message in the response.
    """
    fields = transaction.fields  # element names, upper-cased
    name, number = fields.get("DEVICENAME", ""), fields.get("ACCOUNTNUMBER", "")
    if not (name and number):
        raise XmlApiError(ErrorCode.MISSING_REQUIRED, "RMM-DEVICE needs DeviceName and "
                          "AccountNumber")
    accounts = ctx.directory.find_by_field("account_number", number)
    if len(accounts) != 1:
        raise XmlApiError(ErrorCode.ACCOUNT_NOT_FOUND, f"no single Account numbered {number}")
    return ctx.sink.add_record("ASSET", {
        "FLDASTACCRECID": accounts[0].rec_id,
        "FLDASTNAME": name,
        "FLDASTSERIALNO": fields.get("SERIALNUMBER", ""),
    })
