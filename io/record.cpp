#include "io/record.hpp"

#include <nlohmann/json.hpp>

namespace lpurt::io {

Record& Record::set(const std::string& key, Value value) {
  for (auto& f : fields_)
    if (f.first == key) {
      f.second = std::move(value);
      return *this;
    }
  fields_.emplace_back(key, std::move(value));
  return *this;
}

const Record::Value* Record::find(const std::string& key) const {
  for (const auto& f : fields_)
    if (f.first == key) return &f.second;
  return nullptr;
}

std::string Record::to_json() const {
  // ordered_json keeps the fields in the order they were set; NaN and infinities are written as null.
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  for (const auto& field : fields_) std::visit([&](const auto& v) { object[field.first] = v; }, field.second);
  return object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace lpurt::io
