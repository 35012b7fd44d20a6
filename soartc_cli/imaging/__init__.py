"""Finding image files and turning them into fitted float pixels."""
