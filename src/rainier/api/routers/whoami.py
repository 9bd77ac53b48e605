"""Who a key is: its role and tenant, so a client (the console) shows what the key may do."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from rainier.api.auth import Caller

router = APIRouter(prefix="/api/v1", tags=["system"])


class WhoAmI(BaseModel):
    role: str
    tenant: str | None
    key_id: str | None


@router.get("/whoami")
async def whoami(caller: Caller) -> WhoAmI:
    return WhoAmI(role=caller.role, tenant=caller.tenant, key_id=caller.key_id)
