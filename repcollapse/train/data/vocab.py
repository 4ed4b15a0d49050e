"""Small built-in word lists and fact tables shared by the generators.

Everything here is written by hand for this project (no downloaded data). Lists are tuples so
that iteration order is fixed: the generators must be byte-for-byte deterministic.
"""

from __future__ import annotations

# fmt: off
# Data tables: kept compact on purpose (one element per line would triple the file).

NAMES: tuple[str, ...] = (
    "Maya", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sofia", "Kenji", "Amara",
    "Diego", "Hana", "Felix", "Priya", "Jonas", "Ines", "Tariq", "Chloe", "Mateo", "Yuki", "Nadia",
    "Samir", "Elsa", "Kofi", "Mila", "Arjun", "Leah", "Bruno", "Aisha", "Hugo", "Nora", "Ethan",
    "Lucia", "Dmitri", "Fatima", "Oscar", "Ivy", "Pablo", "Grace",
)

FRUITS: tuple[str, ...] = (
    "apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
    "kiwi", "lime", "melon", "apricot", "fig", "papaya",
)

ANIMALS: tuple[str, ...] = (
    "cat", "dog", "horse", "rabbit", "tiger", "lion", "zebra", "otter", "eagle", "shark", "whale",
    "fox", "wolf", "bear", "owl", "goat", "sheep", "camel", "panda", "koala",
)

COLORS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown",
    "gray", "teal", "gold", "silver",
)

VEGETABLES: tuple[str, ...] = (
    "carrot", "onion", "potato", "tomato", "pepper", "cabbage", "spinach", "celery", "garlic",
    "lettuce", "radish", "turnip", "leek", "pea",
)

INSTRUMENTS: tuple[str, ...] = (
    "piano", "guitar", "violin", "drum", "flute", "trumpet", "cello", "harp", "banjo", "clarinet",
    "saxophone", "ukulele",
)

SPORTS: tuple[str, ...] = (
    "soccer", "tennis", "golf", "rugby", "hockey", "cricket", "baseball", "basketball",
    "volleyball", "swimming", "cycling", "rowing", "boxing", "skiing",
)

CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruits": FRUITS,
    "animals": ANIMALS,
    "colors": COLORS,
    "vegetables": VEGETABLES,
    "musical instruments": INSTRUMENTS,
    "sports": SPORTS,
}
CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)


# Countable objects for word problems: (singular, plural).

OBJECTS: tuple[tuple[str, str], ...] = (
    ("apple", "apples"), ("book", "books"), ("marble", "marbles"), ("pencil", "pencils"),
    ("sticker", "stickers"), ("cookie", "cookies"), ("coin", "coins"), ("card", "cards"),
    ("shell", "shells"), ("stamp", "stamps"), ("balloon", "balloons"), ("cupcake", "cupcakes"),
    ("flower", "flowers"), ("toy car", "toy cars"), ("egg", "eggs"), ("button", "buttons"),
    ("candle", "candles"), ("ribbon", "ribbons"), ("notebook", "notebooks"), ("orange", "oranges"),
)

CONTAINERS: tuple[tuple[str, str], ...] = (
    ("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("jar", "jars"), ("crate", "crates"),
    ("tray", "trays"), ("shelf", "shelves"), ("pack", "packs"),
)

PLACES: tuple[str, ...] = (
    "the market", "the library", "the park", "the bakery", "school", "the museum", "the beach",
    "the zoo", "the farm", "the station", "the harbor", "the garden",
)

ITEMS_FOR_SALE: tuple[str, ...] = (
    "notebook", "lamp", "scarf", "backpack", "mug", "raincoat", "kite", "puzzle", "hat",
    "water bottle", "board game", "jacket", "pair of socks", "plant pot",
)

VEHICLES: tuple[str, ...] = (
    "car", "bus", "train", "bike", "truck", "boat", "van", "scooter",
)


# Plain words for string tasks (lower case, letters only, no duplicates).

WORDS: tuple[str, ...] = (
    "river", "planet", "garden", "window", "silver", "rocket", "candle", "forest", "island",
    "pencil", "monkey", "bridge", "castle", "dragon", "winter", "summer", "anchor", "basket",
    "button", "circle", "desert", "engine", "feather", "guitar", "hammer", "jungle", "kettle",
    "ladder", "magnet", "needle", "orange", "puzzle", "rabbit", "saddle", "tunnel", "violet",
    "wallet", "yellow", "zipper", "marble", "cotton", "lemon", "piano", "tiger", "cloud", "stone",
    "bread", "chair", "light", "ocean", "music", "paper", "table", "train", "water", "apple",
    "dance", "eagle", "flame", "grape", "horse", "jelly", "knife", "mango", "night", "otter",
    "pearl", "quilt", "robot", "sugar", "tulip", "uncle", "wheat", "yacht", "zebra",
)

ADJECTIVES: tuple[str, ...] = (
    "quiet", "bright", "small", "busy", "cheerful", "old", "tiny", "sunny", "famous", "lazy",
    "clever", "calm", "noisy", "friendly", "ancient", "modern", "cozy", "tall",
)

NOUNS_FOR_SENTENCES: tuple[str, ...] = (
    "cat", "teacher", "village", "river", "robot", "baker", "garden", "library", "train",
    "painter", "student", "forest", "musician", "city", "farmer", "ship",
)

VERBS_PAST: tuple[str, ...] = (
    "visited", "painted", "watched", "cleaned", "found", "carried", "opened", "followed", "built",
    "fixed", "noticed", "crossed", "climbed", "finished",
)

TOPICS: tuple[str, ...] = (
    "the ocean", "autumn", "coffee", "a rainy day", "trains", "the moon", "gardening",
    "friendship", "mountains", "libraries", "bicycles", "winter mornings", "bees", "music",
    "cooking", "the desert", "city parks", "old maps", "kites", "lighthouses",
)


# Facts, kept to well-known, stable ones: (country, capital, continent).

COUNTRIES: tuple[tuple[str, str, str], ...] = (
    ("France", "Paris", "Europe"), ("Germany", "Berlin", "Europe"), ("Italy", "Rome", "Europe"),
    ("Spain", "Madrid", "Europe"), ("Portugal", "Lisbon", "Europe"), ("Norway", "Oslo", "Europe"),
    ("Sweden", "Stockholm", "Europe"), ("Finland", "Helsinki", "Europe"),
    ("Poland", "Warsaw", "Europe"), ("Greece", "Athens", "Europe"),
    ("Ireland", "Dublin", "Europe"), ("Austria", "Vienna", "Europe"),
    ("Hungary", "Budapest", "Europe"), ("Egypt", "Cairo", "Africa"),
    ("Kenya", "Nairobi", "Africa"), ("Nigeria", "Abuja", "Africa"), ("Ghana", "Accra", "Africa"),
    ("Morocco", "Rabat", "Africa"), ("Ethiopia", "Addis Ababa", "Africa"),
    ("Japan", "Tokyo", "Asia"), ("China", "Beijing", "Asia"), ("India", "New Delhi", "Asia"),
    ("Thailand", "Bangkok", "Asia"), ("Vietnam", "Hanoi", "Asia"),
    ("South Korea", "Seoul", "Asia"), ("Indonesia", "Jakarta", "Asia"),
    ("Peru", "Lima", "South America"), ("Chile", "Santiago", "South America"),
    ("Argentina", "Buenos Aires", "South America"), ("Colombia", "Bogota", "South America"),
    ("Brazil", "Brasilia", "South America"), ("Canada", "Ottawa", "North America"),
    ("Mexico", "Mexico City", "North America"), ("Cuba", "Havana", "North America"),
    ("Australia", "Canberra", "Oceania"), ("New Zealand", "Wellington", "Oceania"),
)


# (name, symbol, atomic number)

ELEMENTS: tuple[tuple[str, str, int], ...] = (
    ("hydrogen", "H", 1), ("helium", "He", 2), ("lithium", "Li", 3), ("carbon", "C", 6),
    ("nitrogen", "N", 7), ("oxygen", "O", 8), ("fluorine", "F", 9), ("neon", "Ne", 10),
    ("sodium", "Na", 11), ("magnesium", "Mg", 12), ("aluminium", "Al", 13), ("silicon", "Si", 14),
    ("phosphorus", "P", 15), ("sulfur", "S", 16), ("chlorine", "Cl", 17), ("argon", "Ar", 18),
    ("potassium", "K", 19), ("calcium", "Ca", 20), ("iron", "Fe", 26), ("copper", "Cu", 29),
    ("zinc", "Zn", 30), ("silver", "Ag", 47), ("tin", "Sn", 50), ("gold", "Au", 79),
    ("mercury", "Hg", 80), ("lead", "Pb", 82),
)


# (planet, position from the Sun, description)

PLANETS: tuple[tuple[str, int, str], ...] = (
    ("Mercury", 1, "the smallest planet and the closest to the Sun"),
    ("Venus", 2, "a rocky planet with a thick, hot atmosphere of carbon dioxide"),
    ("Earth", 3, "the only planet known to support life"),
    ("Mars", 4, "a cold, rocky planet often called the Red Planet"),
    ("Jupiter", 5, "the largest planet, a gas giant with a Great Red Spot"),
    ("Saturn", 6, "a gas giant famous for its bright rings"),
    ("Uranus", 7, "an ice giant that rotates on its side"),
    ("Neptune", 8, "an ice giant and the farthest planet from the Sun"),
)

ORDINALS: tuple[str, ...] = (
    "zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth",
)

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)


# Unambiguous word pairs for the general tasks.

ANTONYMS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("early", "late"),
    ("light", "dark"), ("open", "closed"), ("full", "empty"), ("strong", "weak"), ("high", "low"),
    ("young", "old"), ("wet", "dry"), ("loud", "quiet"), ("rich", "poor"), ("hard", "soft"),
    ("thick", "thin"), ("first", "last"), ("clean", "dirty"), ("up", "down"), ("win", "lose"),
    ("push", "pull"), ("buy", "sell"), ("near", "far"), ("inside", "outside"), ("begin", "end"),
    ("true", "false"), ("sharp", "blunt"),
)

PLURALS: tuple[tuple[str, str], ...] = (
    ("child", "children"), ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"),
    ("goose", "geese"), ("man", "men"), ("woman", "women"), ("person", "people"), ("box", "boxes"),
    ("city", "cities"), ("knife", "knives"), ("leaf", "leaves"), ("baby", "babies"),
    ("bus", "buses"), ("wolf", "wolves"), ("potato", "potatoes"), ("shelf", "shelves"),
    ("sheep", "sheep"), ("fish", "fish"), ("story", "stories"), ("church", "churches"),
    ("cactus", "cacti"), ("hero", "heroes"), ("wish", "wishes"),
)

# fmt: on
