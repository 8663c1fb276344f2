def main(name: str) -> str:
    return f"Good day, {name}."
