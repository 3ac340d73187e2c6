"""seckill: a flash-sale server that never oversells and never loses an order it promised."""

__version__ = "0.1.0"
