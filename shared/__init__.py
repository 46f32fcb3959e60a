"""Code that both the API and the workers import (no model code at import time)."""
