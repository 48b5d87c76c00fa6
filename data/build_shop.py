"""Builds data/shop.sqlite, the made-up shop that pipelines/shop_sql.yaml queries: customers,
products and orders. Deterministic: the same rows every time, so the eval set's expected
answers (evalsets/shop_sql.jsonl) stay right. Run from anywhere:

    python data/build_shop.py            # writes data/shop.sqlite beside this script
    python data/build_shop.py OUT.sqlite
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

SCHEMA = """\
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT NOT NULL
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    price_cents INTEGER NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL,
    ordered_on TEXT NOT NULL
);
"""

CUSTOMERS = [
    (1, "Ada Brook", "Lyon"),
    (2, "Ben Carver", "Leeds"),
    (3, "Chloe Dunn", "Lyon"),
    (4, "Dev Patel", "Porto"),
    (5, "Eva Lind", "Leeds"),
    (6, "Finn Moss", "Porto"),
]

PRODUCTS = [
    (1, "Kettle", "kitchen", 3500),
    (2, "Toaster", "kitchen", 4200),
    (3, "Desk Lamp", "home", 2500),
    (4, "Rug", "home", 8900),
    (5, "Headphones", "audio", 12000),
    (6, "Speaker", "audio", 7500),
]

# (id, customer, product, quantity, date)
ORDERS = [
    (1, 1, 1, 1, "2024-01-05"),
    (2, 1, 3, 2, "2024-01-19"),
    (3, 2, 5, 1, "2024-02-02"),
    (4, 3, 2, 1, "2024-02-14"),
    (5, 3, 1, 1, "2024-02-20"),
    (6, 4, 4, 1, "2024-03-01"),
    (7, 4, 6, 2, "2024-03-03"),
    (8, 5, 3, 1, "2024-03-10"),
    (9, 2, 6, 1, "2024-03-18"),
    (10, 1, 5, 1, "2024-04-02"),
    (11, 3, 3, 3, "2024-04-11"),
    (12, 5, 1, 2, "2024-04-25"),
]


def build(path: Path) -> None:
    """Write the database to `path` (replacing it), in one step."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?)", CUSTOMERS)
        conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", PRODUCTS)
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", ORDERS)
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()
    os.replace(tmp, path)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("shop.sqlite"))
