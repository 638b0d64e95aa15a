"""Word lists for the procedural word problems (names, goods, places); written for this project."""

# (name, subject pronoun, possessive pronoun)
PEOPLE = [
    ("Maya", "she", "her"),
    ("Liam", "he", "his"),
    ("Priya", "she", "her"),
    ("Tomas", "he", "his"),
    ("Aisha", "she", "her"),
    ("Kenji", "he", "his"),
    ("Elena", "she", "her"),
    ("Marcus", "he", "his"),
    ("Sofia", "she", "her"),
    ("Omar", "he", "his"),
    ("Hannah", "she", "her"),
    ("Diego", "he", "his"),
    ("Nadia", "she", "her"),
    ("Felix", "he", "his"),
    ("Grace", "she", "her"),
    ("Ravi", "he", "his"),
    ("Lucia", "she", "her"),
    ("Jonah", "he", "his"),
    ("Zara", "she", "her"),
    ("Samuel", "he", "his"),
    ("Ingrid", "she", "her"),
    ("Kwame", "he", "his"),
    ("Mei", "she", "her"),
    ("Pablo", "he", "his"),
    ("Chloe", "she", "her"),
    ("Anton", "he", "his"),
    ("Fatima", "she", "her"),
    ("Hugo", "he", "his"),
    ("Leila", "she", "her"),
    ("Noah", "he", "his"),
    ("Rosa", "she", "her"),
    ("Victor", "he", "his"),
]

RELATIVES = ["brother", "sister", "cousin", "uncle", "aunt", "neighbor", "friend", "classmate"]

# (singular, plural, min price, max price) in whole dollars
GOODS = [
    ("notebook", "notebooks", 2, 9),
    ("pen", "pens", 1, 4),
    ("sandwich", "sandwiches", 4, 12),
    ("book", "books", 6, 25),
    ("shirt", "shirts", 8, 30),
    ("plant", "plants", 3, 18),
    ("ticket", "tickets", 5, 40),
    ("candle", "candles", 2, 11),
    ("mug", "mugs", 4, 15),
    ("puzzle", "puzzles", 7, 22),
    ("scarf", "scarves", 9, 28),
    ("lamp", "lamps", 15, 60),
    ("pizza", "pizzas", 8, 20),
    ("basket", "baskets", 5, 19),
    ("poster", "posters", 3, 14),
]

STORES = ["the market", "a bookstore", "the mall", "a hardware store", "the school fair", "a bakery"]

# (vehicle or traveller, verb)
TRAVEL = [("car", "drives"), ("bike", "rides"), ("boat", "sails"), ("train", "travels"), ("scooter", "rides")]

# (countable thing, container, plural container)
SHAREABLES = [
    ("cookies", "box", "boxes"),
    ("marbles", "bag", "bags"),
    ("stickers", "sheet", "sheets"),
    ("crayons", "pack", "packs"),
    ("apples", "crate", "crates"),
    ("cards", "deck", "decks"),
    ("balloons", "bundle", "bundles"),
    ("muffins", "tray", "trays"),
]

# (crop, unit on the plant)
CROPS = [
    ("tomato plants", "tomatoes"),
    ("apple trees", "apples"),
    ("pepper plants", "peppers"),
    ("orange trees", "oranges"),
    ("lemon trees", "lemons"),
    ("strawberry plants", "strawberries"),
]

JOBS = ["tutoring", "dog walking", "babysitting", "painting fences", "washing cars", "coding"]

SALE_ITEMS = [
    ("jacket", "jackets"),
    ("bicycle", "bicycles"),
    ("backpack", "backpacks"),
    ("guitar", "guitars"),
    ("pair of boots", "pairs of boots"),
    ("tent", "tents"),
    ("blender", "blenders"),
]
