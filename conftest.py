"""Root conftest: the stack harness (shop_dev.testing) is available to every test directory."""

pytest_plugins = ["shop_dev.testing"]
