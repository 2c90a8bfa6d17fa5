"""The demo catalog loaded by `catalog seed` (idempotent: products are keyed by SKU)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.models import Category, Product
from catalog.products import service as product_service
from catalog.products.schemas import ProductCreate

# (category slug from the default-categories migration, name, sku, price, stock, tags, description)
DEMO_PRODUCTS: tuple[tuple[str, str, str, str, int, tuple[str, ...], str], ...] = (
    (
        "electronics",
        "Wireless Mouse",
        "EL-MOUSE-01",
        "24.90",
        120,
        ("computer", "wireless"),
        "Quiet two-button mouse with a USB receiver.",
    ),
    (
        "electronics",
        "Mechanical Keyboard",
        "EL-KEYB-01",
        "89.00",
        40,
        ("computer",),
        "Tenkeyless keyboard with brown switches.",
    ),
    (
        "electronics",
        "USB-C Charger 65W",
        "EL-CHRG-65",
        "39.50",
        75,
        ("charging", "usb-c"),
        "GaN charger for laptops and phones.",
    ),
    (
        "electronics",
        "Noise-Cancelling Headphones",
        "EL-HEAD-01",
        "199.00",
        15,
        ("audio", "wireless"),
        "Over-ear headphones, 30 hours of battery.",
    ),
    (
        "books",
        "The Pragmatic Programmer",
        "BK-PRAG-20",
        "42.00",
        30,
        ("programming",),
        "20th anniversary edition.",
    ),
    (
        "books",
        "Designing Data-Intensive Applications",
        "BK-DDIA-01",
        "48.90",
        25,
        ("programming", "databases"),
        "Reliable, scalable and maintainable systems.",
    ),
    (
        "books",
        "A Field Guide to Mushrooms",
        "BK-MUSH-01",
        "18.75",
        8,
        ("nature",),
        "Pocket guide with 300 photographs.",
    ),
    (
        "clothing",
        "Merino T-Shirt",
        "CL-TEE-MER",
        "55.00",
        60,
        ("merino", "summer"),
        "Lightweight merino wool tee.",
    ),
    (
        "clothing",
        "Rain Jacket",
        "CL-JACK-RN",
        "120.00",
        12,
        ("outdoor",),
        "Waterproof, breathable, packable.",
    ),
    (
        "clothing",
        "Wool Socks (3 pairs)",
        "CL-SOCK-3P",
        "21.00",
        200,
        ("merino", "winter"),
        "Cushioned hiking socks.",
    ),
    (
        "home-garden",
        "Cast Iron Skillet",
        "HG-SKIL-26",
        "34.99",
        22,
        ("kitchen",),
        "26 cm, pre-seasoned.",
    ),
    (
        "home-garden",
        "Pruning Shears",
        "HG-PRUN-01",
        "16.40",
        3,
        ("garden", "tools"),
        "Bypass shears for branches up to 2 cm.",
    ),
)


def seed_demo_catalog(session: Session) -> int:
    """Create the demo products that are missing; returns how many were created."""
    categories = {row.slug: row.id for row in session.execute(select(Category.slug, Category.id))}
    existing = set(session.scalars(select(Product.sku)))
    created = 0
    for slug, name, sku, price, stock, tags, description in DEMO_PRODUCTS:
        if sku in existing:
            continue
        data = ProductCreate(
            name=name,
            sku=sku,
            price=Decimal(price),
            stock_quantity=stock,
            description=description,
            category_id=categories.get(slug),
            tags=list(tags),
        )
        product_service.create_product(session, data)
        created += 1
    return created
