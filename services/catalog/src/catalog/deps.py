"""Path and query aliases shared by the catalog routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session, sessionmaker

INT4_MAX = 2**31 - 1

# An id int4 cannot hold is a 422, never a DataError.
CategoryId = Annotated[int, Path(ge=1, le=INT4_MAX)]
ProductId = Annotated[int, Path(ge=1, le=INT4_MAX)]


def _sessionmaker(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    return factory


# For handlers that lock rows others wait on (stock): they open and commit the transaction
# themselves, inside the one worker thread that runs the handler. With SessionDep the commit runs
# in a second threadpool hop; when every worker thread is busy with requests waiting on our row
# lock, that hop cannot start and the lock is held until their statement_timeout (measured: 50
# concurrent reservations of one product → 503s after 5 s).
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_sessionmaker)]
