"""The HTML pages: views you read top to bottom, and their URLs."""
