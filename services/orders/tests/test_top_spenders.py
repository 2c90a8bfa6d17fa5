"""Top spenders are enriched with usernames from the users service, in one batch call, and
degrade to bare ids when users cannot be reached."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from orders.main import create_app
from shop_dev.stack import free_port
from shop_dev.testing import RunningStack, TestKeys

if TYPE_CHECKING:
    from conftest import ActorFactory, ProductFactory, SettingsFactory


def test_top_spender_gets_the_username_from_users(
    stack: RunningStack,
    admin_engine: Engine,
    make_actor: ActorFactory,
    make_product: ProductFactory,
) -> None:
    with admin_engine.connect() as conn:
        user_id = conn.scalar(
            text("SELECT id FROM users.users WHERE username = :u"), {"u": stack.admin_username}
        )
    assert isinstance(user_id, int)
    superuser = make_actor(is_superuser=True, user_id=user_id)
    # 1000 x 99999.99 = 99999990.00: no other test's customer can outspend it.
    product = make_product(price="99999.99", stock=1000)
    order = superuser.order((product["id"], 1000)).json()
    superuser.patch(f"/orders/{order['id']}/status", params={"new_status": "confirmed"})

    top = superuser.get("/orders/stats/top-spenders", params={"limit": 1})

    assert top.status_code == 200
    assert top.json() == [
        {
            "user_id": user_id,
            "username": stack.admin_username,
            "total_spent": "99999990.00",
            "order_count": 1,
        }
    ]


def test_top_spenders_degrade_to_ids_when_users_is_down(
    make_settings: SettingsFactory,
    jwt_keys: TestKeys,
    make_actor: ActorFactory,
    make_product: ProductFactory,
) -> None:
    admin_actor = make_actor(is_superuser=True)
    big = make_product(price="99999.99", stock=999)  # ranks it among the top spenders
    order = admin_actor.order((big["id"], 999)).json()
    admin_actor.patch(f"/orders/{order['id']}/status", params={"new_status": "confirmed"})
    settings = make_settings(users_url=f"http://127.0.0.1:{free_port()}")
    admin = {"Authorization": f"Bearer {jwt_keys.token(1, 'admin', is_superuser=True)}"}

    with TestClient(create_app(settings)) as client:
        response = client.get("/orders/stats/top-spenders", params={"limit": 100}, headers=admin)

    assert response.status_code == 200
    rows = response.json()
    assert admin_actor.id in {row["user_id"] for row in rows}
    assert {row["username"] for row in rows} == {None}
